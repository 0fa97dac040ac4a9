"""Error types whose message is the one line a user sees (it names the file, offset or config key)."""
from __future__ import annotations


class FaceflowError(Exception):
    """A user-facing error: the CLI prints `faceflow CMD: error: <message>` and exits 1."""


class DataFormatError(FaceflowError):
    """Malformed input data (RecordIO, .idx, property, .bin, OFRecord, images)."""


class ConfigError(FaceflowError):
    """A bad configuration value; the message names the key."""
