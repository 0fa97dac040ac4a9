"""Test-only tools kept out of the shared venv: one venv per tool under ~/.cache/faceflow-tests/ (outside the
repo), built once with pinned packages; a test skips, printing why, only when the venv cannot be built."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

CACHE = Path(os.environ.get("FACEFLOW_TEST_CACHE", Path.home() / ".cache" / "faceflow-tests"))


def skip_with_reason(reason: str) -> None:
    """Skip the calling test, printing the reason (pytest -q hides skip messages otherwise)."""
    print(f"skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


BASE_PYTHON = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def cached_venv(name: str, pins: Sequence[str], base_python: str = BASE_PYTHON) -> Path:
    """The python of CACHE/NAME with `pins` installed, built on first use under a lock (pytest workers share
    it); a half-built venv is never used, a venv built with other pins is rebuilt. The venv is built under a
    temporary name and renamed: run its tools as `python -m`, its console scripts name the temporary path."""
    venv = CACHE / name
    python, marker = venv / "bin" / "python", venv / "faceflow-pins.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and marker.is_file() and json.loads(marker.read_text()) == list(pins):
            return python
        partial = venv.with_name(venv.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build = subprocess.run([base_python, "-m", "venv", str(partial)], capture_output=True, text=True)
        if build.returncode == 0:
            build = subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "-q", *pins],
                                   capture_output=True, text=True)
        if build.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            last = (build.stderr or build.stdout).strip().splitlines()[-1:]
            skip_with_reason(f"cannot build the {name} venv with {' '.join(pins)}: {last}")
        (partial / "faceflow-pins.json").write_text(json.dumps(list(pins)))
        shutil.rmtree(venv, ignore_errors=True)
        partial.rename(venv)
    return python
