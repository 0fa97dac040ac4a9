"""Runs a small workflow target through profiles/slurm and profiles/cluster-generic on a real
single-node SLURM cluster (tests/slurm_cluster.py) and checks that SLURM ran its jobs."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import REPO, SlurmCluster, slurm_cluster  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TARGET = "results/ofrecord/synthetic/val/lfw"
RULES = {"synth_synthetic", "convert_bin"}
GPU_RULE = "convert_bin"
# How each profile turns a job's GPU need into sbatch's --gres (the test cluster has 2 fake GPUs).
GPU_REQUEST = {"slurm": f"{GPU_RULE}:slurm_extra=--gres=gpu:1", "cluster-generic": f"{GPU_RULE}:gpu=1"}
VENV_BIN = Path(sys.executable).parent


def tiny_workdir(workdir: Path) -> Path:
    """A working directory whose config/config.yaml is the shipped one with a tiny synthetic set."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"]["synthetic"]["synthetic"].update(classes=8, per_class=4, pairs=20)
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def finished_jobs(cluster: SlurmCluster, workdir: Path, count: int) -> list[dict[str, str]]:
    """sacct records of the jobs run in workdir, waiting briefly for slurmdbd to record `count`."""
    deadline = time.monotonic() + 20
    jobs = cluster.jobs(workdir)
    while (len(jobs) < count or any(j["State"] != "COMPLETED" for j in jobs)) and time.monotonic() < deadline:
        time.sleep(1)
        jobs = cluster.jobs(workdir)
    return jobs


@pytest.mark.parametrize("profile", ["slurm", "cluster-generic"])
def test_profile_runs_workflow_target_on_slurm(profile: str, slurm_cluster: SlurmCluster,
                                              tmp_path: Path) -> None:
    workdir = tiny_workdir(tmp_path / "work")
    env = {**slurm_cluster.env, "PATH": f"{VENV_BIN}:{slurm_cluster.env.get('PATH', '')}"}
    cmd = [str(VENV_BIN / "snakemake"), TARGET, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--profile", str(REPO / "profiles" / profile),
           "--set-resources", GPU_REQUEST[profile]]
    done = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + "\n" + slurm_cluster.log_tail()

    part = workdir / TARGET / "part-00000"
    assert part.is_file() and part.stat().st_size > 0
    jobs = finished_jobs(slurm_cluster, workdir, len(RULES))
    assert len(jobs) == len(RULES), jobs
    assert all(job["State"] == "COMPLETED" for job in jobs), jobs
    rules = rule_of_job(profile, done.stdout, jobs)
    assert sorted(rules.values()) == sorted(RULES), (rules, jobs)
    for job in jobs:
        has_gpu = "gres/gpu=1" in job["AllocTRES"]
        assert has_gpu == (rules[job["JobIDRaw"]] == GPU_RULE), job


def rule_of_job(profile: str, log: str, jobs: list[dict[str, str]]) -> dict[str, str]:
    """{SLURM job id: rule}: the SLURM executor names jobs by run and logs to slurm_logs/rule_R/ID.log,
    the generic profile names them smk-RULE."""
    if profile == "cluster-generic":
        return {job["JobIDRaw"]: job["JobName"].removeprefix("smk-") for job in jobs}
    return dict(re.findall(r"SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", log))


def test_cluster_status_script_maps_slurm_states(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    status = REPO / "profiles" / "cluster-generic" / "status.py"
    ids = {}
    for name, command in {"ok": "true", "bad": "exit 3"}.items():
        submitted = slurm_cluster.run("sbatch", "--parsable", "-D", str(tmp_path), "-o", "/dev/null",
                                      f"--wrap={command}")
        assert submitted.returncode == 0, submitted.stderr
        ids[name] = submitted.stdout.strip().split(";")[0]

    def states() -> dict[str, str]:
        return {name: slurm_cluster.run(sys.executable, str(status), jobid).stdout.strip()
                for name, jobid in ids.items()}

    deadline = time.monotonic() + 60
    seen = states()
    while "running" in seen.values() and time.monotonic() < deadline:
        time.sleep(1)
        seen = states()
    assert seen == {"ok": "success", "bad": "failed"}
    assert slurm_cluster.run(sys.executable, str(status), "999999").stdout.strip() == "failed"
