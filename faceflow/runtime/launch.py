"""`python -m faceflow.runtime.launch ...`: oneflow.distributed.launch with the CUDA libraries loaded first.

Same arguments as `python -m oneflow.distributed.launch`; children that run faceflow modules
(`--module faceflow....`) import faceflow first as well.
"""
from __future__ import annotations

import faceflow  # noqa: F401  (loads the CUDA libraries, quiet oneflow import)


def main() -> None:
    """Run OneFlow's multi-process launcher in this (prepared) interpreter."""
    from oneflow.distributed import launch

    launch.main()


if __name__ == "__main__":
    main()
