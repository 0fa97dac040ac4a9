"""Shared test setup: Snakemake and the SLURM tools read $USER, which CI does not set."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("USER", "root")

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
