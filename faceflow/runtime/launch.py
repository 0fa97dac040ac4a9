"""`python -m faceflow.runtime.launch ...`: oneflow.distributed.launch with the CUDA libraries loaded first.

Same arguments as `python -m oneflow.distributed.launch`; children that run faceflow modules
(`--module faceflow....`) load them through `faceflow.runtime.flow` as well.
"""
from __future__ import annotations

import os

from faceflow.runtime.lifetime import child_env, exit_with_parent


def main() -> None:
    """Run OneFlow's multi-process launcher in this (prepared) interpreter, tied to `faceflow train`.

    The launcher copies os.environ into its workers, so naming this process there ties them to it.
    """
    from faceflow.runtime.flow import flow  # noqa: F401  (the CUDA libraries before OneFlow's launcher)
    from oneflow.distributed import launch

    exit_with_parent()
    os.environ.update(child_env())
    launch.main()


if __name__ == "__main__":
    main()
