"""Import MXNet for the exchange modules with its per-bind subgraph banner turned off."""
from __future__ import annotations

import os

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import mxnet as mx  # noqa: E402

__all__ = ["mx"]
