"""The workflow under both Snakemake generations: 7.32 (.venv) and 9.x from its own Python 3.11 venv
(tests/snakemake9.py), with the jobs running faceflow from .venv. Dry run, lint, --configfile, both
cluster profiles, and what a GPU and a multi-node run ask for. The real runs under 9.x are tests/test_slurm.py's
(a target through the cluster-generic executor; train, validate and export through the SLURM executor)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from snakemake9 import run_snakemake9, snakemake9_python
from workflow_helpers import REPO, copy_workflow, job_counts, snakemake

# the config of test_gpu_and_multi_node_runs_ask_for_what_they_run: an 8-GPU r100 run and a 2-node run
GPU_RUNS = {
    "r100": {"dataset": "synthetic", "base": "emore_r100_arcface", "device": "cuda", "gpus": 8, "steps": 40},
    "two_nodes": {"dataset": "synthetic", "base": "demo", "device": "cuda", "gpus": 4, "nodes": 2, "steps": 40,
                  "threads": 8, "cpus_per_gpu": 6, "mem_mb_per_process": 16000},
}


@pytest.fixture(scope="module")
def python9() -> Path:
    return snakemake9_python()


def with_venv(workdir: Path) -> Path:
    """A workflow copy whose .venv is the repository's, as in a checkout (where jobs find faceflow)."""
    (workdir / ".venv").symlink_to(REPO / ".venv")
    return workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return with_venv(copy_workflow(tmp_path_factory.mktemp("wf9")))


def test_dry_run_lint_and_configfile_under_snakemake9(python9: Path, workdir: Path) -> None:
    seven = snakemake(workdir, "-n", "all")
    assert seven.returncode == 0, seven.stdout
    nine = run_snakemake9(python9, workdir, "-n", "all", "--configfile", "config/config.yaml")
    assert nine.returncode == 0, nine.stdout
    assert job_counts(nine.stdout) == job_counts(seven.stdout) and job_counts(nine.stdout)["train"] == 2
    lint = run_snakemake9(python9, workdir, "--lint")
    assert lint.returncode == 0, lint.stdout
    assert "Congratulations" in lint.stdout


@pytest.mark.parametrize("profile", ["slurm", "cluster-generic"])
def test_cluster_profiles_load_under_both_generations(python9: Path, workdir: Path, profile: str) -> None:
    for done in (snakemake(workdir, "-n", "--profile", f"profiles/{profile}", "all"),
                 run_snakemake9(python9, workdir, "-n", "--profile", f"profiles/{profile}", "all")):
        assert done.returncode == 0, done.stdout
        assert "ambiguous option" not in done.stdout and job_counts(done.stdout)["train"] == 2


def train_jobs(output: str) -> dict[str, dict[str, str]]:
    """{run: resources} of the train jobs of a dry run's job listing (`resources: a=1, b=x`)."""
    jobs = {}
    for block in re.findall(r"rule train:\n((?:    .*\n)+)", output):
        run = re.search(r"wildcards: run=(\S+)", block).group(1)
        line = re.search(r"resources: (.*)", block).group(1)
        jobs[run] = dict(item.split("=", 1) for item in line.split(", "))
    return jobs


def test_gpu_and_multi_node_runs_ask_for_what_they_run(python9: Path, tmp_path: Path) -> None:
    workdir = with_venv(copy_workflow(tmp_path / "wf"))
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["runs"] = GPU_RUNS
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    targets = [f"results/runs/{run}/train.json" for run in GPU_RUNS]
    seven = snakemake(workdir, "-n", "-p", "--cores", "64", *targets)
    nine = run_snakemake9(python9, workdir, "-n", "-p", "--cores", "64", *targets)
    for done, generation in ((seven, 7), (nine, 9)):
        assert done.returncode == 0, done.stdout
        jobs = train_jobs(done.stdout)
        # 8 processes of 24000 MB (the CUDA default), 4 CPUs per GPU (threads 8 capped at cpus_per_gpu's default)
        assert {k: jobs["r100"][k] for k in ("mem_mb", "cpus_per_task", "gpu", "nodes")} == \
            {"mem_mb": "192000", "cpus_per_task": "32", "gpu": "8", "nodes": "1"}
        assert "mpi" not in jobs["r100"] and "tasks" not in jobs["r100"]
        # per node: 4 processes of 16000 MB, 6 CPUs each; one mpi job of 2 tasks over 2 nodes
        assert {k: jobs["two_nodes"][k] for k in ("mem_mb", "cpus_per_task", "gpu", "nodes", "mpi", "tasks")} == \
            {"mem_mb": "64000", "cpus_per_task": "24", "gpu": "4", "nodes": "2", "mpi": "srun", "tasks": "2"}
        # Snakemake 7's --slurm takes GPUs from slurm_extra; the 9.x SLURM executor refuses them there
        assert ("slurm_extra" in jobs["r100"]) == (generation == 7)
        assert re.search(r"srun --nodes=2 --ntasks=2 --ntasks-per-node=1 \S+ faceflow train demo .*"
                         r"--nproc-per-node 4 --nnodes 2 --from-slurm", done.stdout)


PLANNING_ONLY = """
import sys, yaml
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"numpy", "PIL", "tqdm", "oneflow", "onnx", "sklearn"}:
            raise ImportError(f"planning imported {name}")
sys.meta_path.insert(0, Refuse())
from faceflow.workflow.session import load_plan
import faceflow.cli.select_checkpoint, faceflow.cli.exported_model
plan = load_plan(sys.argv[1], yaml.safe_load(open(sys.argv[1] + "/config/config.yaml")))
print(len(plan.runs))
"""


def test_planning_needs_only_what_the_snakemake9_venv_has(python9: Path) -> None:
    """Snakemake 9's interpreter plans the DAG without numpy, PIL, tqdm or OneFlow (it has no OneFlow)."""
    done = subprocess.run([str(python9), "-c", PLANNING_ONLY, str(REPO)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
