"""What training does with a record whose image does not decode: the values of the `bad_images` key.

Its own module so that the key table (faceflow.train.keys), and with it the workflow's planning,
reads the names without the record-checking code and its dependencies (numpy, tqdm).
"""
from __future__ import annotations

BAD_IMAGE_POLICIES = ("fail", "skip")  # stop the run, or leave the record out and count it
