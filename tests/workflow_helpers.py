"""Helpers of the workflow tests: a throw-away copy of the workflow and a snakemake runner."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
WORKFLOW_FILES = ("Snakefile", "workflow", "profiles", "config")


def copy_workflow(target: Path) -> Path:
    """Copy the Snakefile, rules, schema, profiles and config into `target` (results land there)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    return target


def snakemake(workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run snakemake in `workdir` and return the completed process (stdout and stderr merged)."""
    env = {**os.environ, "USER": os.environ.get("USER", "root")}
    return subprocess.run([SNAKEMAKE, *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The `Job stats` table of a (dry) run as {rule: count}; empty when there is nothing to do."""
    counts: dict[str, int] = {}
    if "Job stats:" not in output:
        return counts
    table = output.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts
