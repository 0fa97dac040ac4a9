"""What the Snakefile loads at start: the validated config, its plan, and where jobs find `faceflow`."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from faceflow.workflow.config_check import validate_config
from faceflow.workflow.plan import WorkflowPlan, build_plan

SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"
JOB_VENV = ".venv"  # the repository's Python 3.10 environment with faceflow and OneFlow (`make env`)
STRICT_BASH = "set -euo pipefail; "  # Snakemake's own prefix, which a Snakefile's shell.prefix replaces


def job_bin(basedir: str | Path) -> Path | None:
    """The bin directory jobs run `faceflow` from: BASEDIR/.venv/bin, else Snakemake's own when faceflow is
    installed beside it (Snakemake 7 in another faceflow venv), else None (`faceflow` from PATH)."""
    for bindir in (Path(basedir) / JOB_VENV / "bin", Path(sys.executable).parent):
        if (bindir / "faceflow").exists():
            return bindir
    return None


def job_shell_prefix(basedir: str | Path, use_conda: bool) -> str:
    """The prefix of every job's shell command: strict bash, then BASEDIR/.venv/bin first on the job's PATH.

    Snakemake's own interpreter (7.32 in .venv, or 9.x in a Python 3.11 venv without OneFlow) is not where
    `faceflow` lives, so the command line says where; with --use-conda the job's environment provides it.
    """
    bindir = None if use_conda else job_bin(basedir)
    if bindir is None:
        return STRICT_BASH
    return f'{STRICT_BASH}export PATH={shlex.quote(str(bindir.absolute()))}:"$PATH"; '


def load_plan(basedir: str | Path, config: dict[str, Any], source: str = "config") -> WorkflowPlan:
    """Validate the workflow config against the schema (ConfigError naming the key) and plan it."""
    filled = validate_config(config, Path(basedir) / SCHEMA, source=source)
    return build_plan(filled)
