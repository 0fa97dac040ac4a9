"""Test helper: Snakemake 9 in its own Python >= 3.11 venv (the pins of `make snakemake9`,
workflow/envs/snakemake9.txt), built once under ~/.cache/faceflow-tests/ by cached_venv; a test skips,
printing why, only when no such Python is found or the venv cannot be installed."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cached_venv import cached_venv, skip_with_reason

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "workflow" / "envs" / "snakemake9.txt"
CANDIDATES = ("python3.13", "python3.12", "python3.11", "python3")


def pins() -> list[str]:
    """The requirement lines of workflow/envs/snakemake9.txt (what `make snakemake9` installs)."""
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line]


def python311() -> str | None:
    """A Python >= 3.11 on PATH (the .venv's own 3.10 does not qualify)."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if not found:
            continue
        done = subprocess.run([found, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                              capture_output=True, text=True)
        if done.stdout.strip() == "True":
            return found
    return None


def snakemake9_python() -> Path:
    """The python of the Snakemake 9 venv (run Snakemake as `python -m snakemake`)."""
    base = python311()
    if base is None:
        skip_with_reason(f"no Python >= 3.11 on PATH ({', '.join(CANDIDATES)}) for the Snakemake 9 venv")
    return cached_venv("snakemake9", pins(), base_python=base)


def run_snakemake9(python: Path, workdir: Path, *args: str, env: dict[str, str] | None = None,
                   timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` in workdir (stdout and stderr merged); planning imports faceflow from
    this checkout (PYTHONPATH), the jobs run faceflow from .venv."""
    env = {**(env or os.environ), "USER": os.environ.get("USER", "root")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return subprocess.run([str(python), "-m", "snakemake", *args], cwd=workdir, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
