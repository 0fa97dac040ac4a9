"""`faceflow keys`: print the training-config keys (the table in faceflow/train/keys.py) as Markdown."""
from __future__ import annotations

import argparse

from faceflow.train.keys import keys_markdown


def main(argv: list[str]) -> int:
    """Print every key: its run key in the workflow's `runs:` entries, type, default, allowed values, meaning."""
    argparse.ArgumentParser(prog="faceflow keys", description=__doc__).parse_args(argv)
    print(keys_markdown())
    return 0
