"""What the Snakefile loads at start: the validated config, its plan, and the job environment."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from faceflow.workflow.config_check import validate_config
from faceflow.workflow.plan import WorkflowPlan, build_plan

SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"


def prepare_job_environment() -> None:
    """Jobs find this interpreter's `faceflow` first."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, path]) if path else bindir


def load_plan(basedir: str | Path, config: dict[str, Any], source: str = "config") -> WorkflowPlan:
    """Validate the workflow config against the schema (ConfigError naming the key) and plan it."""
    prepare_job_environment()
    filled = validate_config(config, Path(basedir) / SCHEMA, source=source)
    return build_plan(filled)
