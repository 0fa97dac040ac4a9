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


def snakemake(workdir: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
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


def tiny_run_workflow(target: Path, steps: int = 12, checkpoint_every: int = 3, ijb: dict | None = None,
                      **run: object) -> Path:
    """A workflow copy with one tiny CPU run (`tiny`: narrow mbf, eager, batch 8) on a tiny synthetic set,
    validated on lfw and exported to ONNX; `run` overrides keys of the run entry. No IJB unless `ijb` (the
    config's ijb section) is given: then synth draws the smallest IJB sets (4 identities)."""
    import yaml

    workdir = copy_workflow(target)
    base = workdir / "config" / "tiny_base.yaml"
    base.write_text(yaml.safe_dump({
        "network": "mbf", "embedding_size": 16, "network_kwargs": {"width_mult": 0.125, "blocks": [1, 1, 1, 1]},
        "loss": "softmax", "batch_size": 8, "max_steps": steps, "lr": 0.05, "checkpoint_every": checkpoint_every,
        "log_every": 1, "graph": False, "device": "cpu", "num_threads": 1}))
    config = {
        "datasets": {"synthetic": {"synthetic": {"classes": 8, "per_class": 4, "pairs": 20, "seed": 0,
                                                 "ijb_identities": 4 if ijb else 0}}},
        "runs": {"tiny": {"dataset": "synthetic", "base": "config/tiny_base.yaml", "device": "cpu", "gpus": 1,
                          "threads": 1, **run}},
        "validation": {"benchmarks": ["lfw"], "batch_size": 20},
        "export": {"formats": ["onnx"], "checkpoint": "last"},
        "ijb": ijb or {"targets": []},
    }
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir
