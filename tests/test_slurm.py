"""Workflow targets through the cluster profiles of both Snakemake generations on a real two-node SLURM
cluster (tests/slurm_cluster.py): Snakemake 7.32's `--slurm` and cluster profile, Snakemake 9's
cluster-generic executor, and a 2-node x 1-process training run, through Snakemake 9's SLURM executor and
through Snakemake 7's cluster profile, whose loss curve is the 1-node x 2-process run's, validated and exported as
any run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import REPO, SlurmCluster, slurm_cluster  # noqa: F401  (fixture)
from snakemake9 import run_snakemake9, snakemake9_python

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TARGET = "results/ofrecord/synthetic/val/lfw"
RULES = {"synth_synthetic", "convert_bin"}
GPU_RULE = "convert_bin"
# How each generation's profile turns a job's GPU need into sbatch's GPU request (the test cluster has
# 2 fake GPUs per node): Snakemake 7's --slurm through slurm_extra, every other executor the `gpu` resource.
GPU_REQUEST = {(7, "slurm"): f"{GPU_RULE}:slurm_extra=--gres=gpu:1"}
VENV_BIN = Path(sys.executable).parent
# Snakemake 9's SLURM executor: first status check after 2 s, not 40
SLURM9_OPTIONS = ("--slurm-init-seconds-before-status-checks", "2")


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


def submit(generation: int, cluster: SlurmCluster, workdir: Path, profile: str, *args: str,
           ) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in workdir through profiles/PROFILE with Snakemake `generation`."""
    common = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
              "--profile", str(REPO / "profiles" / profile), *args]
    if generation == 9:  # with no faceflow on PATH: the jobs find .venv's through the workflow's shell prefix
        path = os.pathsep.join(p for p in cluster.env.get("PATH", "").split(os.pathsep)
                               if not (Path(p) / "faceflow").exists())
        return run_snakemake9(snakemake9_python(), workdir, *common, env={**cluster.env, "PATH": path}, timeout=600)
    env = {**cluster.env, "PATH": f"{VENV_BIN}:{cluster.env.get('PATH', '')}"}
    return subprocess.run([str(VENV_BIN / "snakemake"), *common], cwd=workdir, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)


def rule_of_job(profile: str, log: str, jobs: list[dict[str, str]]) -> dict[str, str]:
    """{SLURM job id: rule}: Snakemake 7's SLURM executor names jobs by run and log to slurm_logs/rule_R/ID.log,
    the generic profile names them smk-RULE."""
    if profile == "cluster-generic":
        return {job["JobIDRaw"]: job["JobName"].removeprefix("smk-") for job in jobs}
    return dict(re.findall(r"SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", log))


@pytest.mark.parametrize("generation, profile", [(7, "slurm"), (7, "cluster-generic"), (9, "cluster-generic")])
def test_profile_runs_workflow_target_on_slurm(generation: int, profile: str, slurm_cluster: SlurmCluster,
                                              tmp_path: Path) -> None:
    workdir = tiny_workdir(tmp_path / "work")
    gpu = GPU_REQUEST.get((generation, profile), f"{GPU_RULE}:gpu=1")
    done = submit(generation, slurm_cluster, workdir, profile, TARGET, "--set-resources", gpu)
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


def two_runs_workdir(workdir: Path) -> Path:
    """A workflow config with one tiny CPU run on 2 nodes x 1 process and the same run on 1 node x 2."""
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "tiny_base.yaml").write_text(yaml.safe_dump({
        "network": "mbf", "embedding_size": 16, "network_kwargs": {"width_mult": 0.125, "blocks": [1, 1, 1, 1]},
        "loss": "softmax", "batch_size": 8, "max_steps": 4, "lr": 0.05, "checkpoint_every": 2, "log_every": 1,
        "graph": False, "device": "cpu", "num_threads": 1, "seed": 5}))
    run = {"dataset": "synthetic", "base": "config/tiny_base.yaml", "device": "cpu", "threads": 1,
           "mem_mb_per_process": 1500}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump({
        "datasets": {"synthetic": {"synthetic": {"classes": 8, "per_class": 4, "pairs": 20, "seed": 0}}},
        "runs": {"two_nodes": {**run, "nodes": 2, "gpus": 1}, "one_node": {**run, "gpus": 2}},
        "validation": {"benchmarks": ["lfw"], "batch_size": 20},
        "export": {"formats": ["onnx"], "checkpoint": "last"},
    }))
    return workdir


def losses(run_dir: Path) -> list[float]:
    """The loss of every step in metrics.jsonl."""
    lines = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return [record["loss"] for record in lines if "loss" in record]


# (Snakemake generation, profile, extra options) of the real 2-node runs
TWO_NODE_SUBMISSIONS = [(9, "slurm", SLURM9_OPTIONS), (7, "cluster-generic", ())]


@pytest.mark.parametrize("generation, profile, options", TWO_NODE_SUBMISSIONS,
                         ids=[f"{generation}-{profile}" for generation, profile, _ in TWO_NODE_SUBMISSIONS])
def test_two_node_run_through_a_slurm_profile(generation: int, profile: str, options: tuple,
                                              slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    workdir = two_runs_workdir(tmp_path / "work")
    targets = ["results/runs/two_nodes/train.json", "results/runs/one_node/train.json",
               "results/runs/two_nodes/validation/step_000004/lfw.json", "results/runs/two_nodes/export/export.json"]
    done = submit(generation, slurm_cluster, workdir, profile, *targets, *options)
    assert done.returncode == 0, done.stdout[-6000:] + "\n" + slurm_cluster.log_tail()

    two, one = workdir / "results/runs/two_nodes", workdir / "results/runs/one_node"
    assert len(losses(two)) == len(losses(one)) == 4
    assert losses(two) == pytest.approx(losses(one), rel=1e-4, abs=1e-5)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    assert json.loads((two / "validation/step_000004/lfw.json").read_text())["benchmark"] == "lfw"
    exported = json.loads((two / "export/export.json").read_text())  # faceflow select-checkpoint chose it
    assert Path(exported["checkpoint"]).name == "step_000004"
    jobs = finished_jobs(slurm_cluster, workdir, 7)  # synth, convert_train, convert_bin, 2 x train, validate, export
    assert len(jobs) == 7 and all(job["State"] == "COMPLETED" for job in jobs), jobs
    assert sorted(job["NNodes"] for job in jobs) == ["1"] * 6 + ["2"], jobs  # only the 2-node run spans 2


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


def test_cluster_nodes_have_their_own_addresses(slurm_cluster: SlurmCluster) -> None:
    """srun over both nodes: each task runs on its node, in its namespace, at its NodeAddr."""
    out = slurm_cluster.run("srun", f"--nodes={len(slurm_cluster.nodes)}", "--ntasks-per-node=1", "bash", "-c",
                            "echo $(hostname) $SLURM_NODEID $(ip -4 -o addr show eth0 | awk '{print $4}')",
                            timeout=120)
    assert out.returncode == 0, out.stderr
    rows = sorted(line.split() for line in out.stdout.splitlines())
    assert [row[:2] for row in rows] == [["node0", "0"], ["node1", "1"]]
    addresses = {row[2].split("/")[0] for row in rows}
    assert len(addresses) == 2 and not any(addr.startswith("127.") for addr in addresses)
    assert os.path.exists(slurm_cluster.root / "run" / "netns.list")
