"""Tie launched processes to their parent: a `faceflow train` that is killed takes its workers with it.

`faceflow train` -> `faceflow.runtime.launch` -> one worker per rank. Without this, killing the top
process (`kill`, a scheduler's SIGTERM or SIGKILL) leaves the launcher and the workers training on as
orphans. Each parent names itself in PARENT_ENV; each child asks Linux for SIGTERM when that parent exits.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "FACEFLOW_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) naming this process as the parent of the children started with it."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def exit_with_parent() -> bool:
    """If started by a faceflow parent, receive SIGTERM when it exits (exit now if it is already gone).

    Returns whether the tie was made (Linux only; a process not started through `child_env` is left alone).
    """
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != int(parent):  # the parent died before the tie was made
        os.kill(os.getpid(), signal.SIGTERM)
    return True


__all__ = ["PARENT_ENV", "child_env", "exit_with_parent"]
