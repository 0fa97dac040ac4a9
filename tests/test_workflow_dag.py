"""The workflow's DAG, lint, config errors at start, and the dataset rules (download, link, ready-made OFRecord)."""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from faceflow.errors import ConfigError
from faceflow.workflow.config_check import validate_config
from faceflow.workflow.plan import build_plan
from workflow_helpers import REPO, copy_workflow, job_counts, snakemake

DATA = {"train.rec": b"r" * 4000, "train.idx": b"0\t0\n", "property": b"2,112,112\n",
        "lfw.bin": b"l", "cfp_fp.bin": b"c", "agedb_30.bin": b"a"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def _default_plan():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return build_plan(validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml"))


def test_dry_run_builds_the_dag(workdir: Path) -> None:
    result = snakemake(workdir, "-n", "all")
    assert result.returncode == 0, result.stdout
    plan = _default_plan()
    counts = job_counts(result.stdout)
    checkpoints = sum(len(run.checkpoint_steps) for run in plan.runs.values())
    assert counts["train"] == len(plan.runs) == 2
    assert counts["validate_checkpoint"] == checkpoints  # one job per checkpoint covers every benchmark
    assert counts["export_model"] == 2 and counts["make_report"] == 1
    assert counts["convert_bin"] == 3 and counts["convert_train"] == 1 and counts["synth_synthetic"] == 1
    assert "faceflow train demo" in result.stdout and "--nproc-per-node 2" in result.stdout
    # train declares only its completion manifest, so an interrupted job's checkpoints are never deleted
    train_outputs = set(re.findall(r"rule train:\n(?:    .*\n)*?    output: (.*)\n", result.stdout))
    assert train_outputs == {f"results/runs/{run}/train.json" for run in plan.runs}
    assert result.stdout.count("--restart-if-changed") == len(plan.runs)
    benches = " ".join(f"--bench {bench}=results/ofrecord/synthetic/val/{bench}" for bench in plan.benchmarks)
    assert result.stdout.count(f"{benches} --device cpu --engine auto --threads 2") == checkpoints


def test_cuda_run_validation_asks_for_one_gpu(tmp_path: Path) -> None:
    """A CUDA run's validation job requests gpu=1 and passes it to SLURM as the train job does; CPU runs' none."""
    workdir = copy_workflow(tmp_path / "wf")
    base = workdir / "base.yaml"
    base.write_text(yaml.safe_dump({"network": "r18", "batch_size": 8, "max_steps": 4, "checkpoint_every": 2}))
    config = {
        "datasets": {"synthetic": {"synthetic": {"classes": 8, "per_class": 4, "pairs": 20, "seed": 0}}},
        "runs": {"big": {"dataset": "synthetic", "base": str(base), "device": "cuda", "gpus": 4},
                 "small": {"dataset": "synthetic", "base": str(base), "device": "cpu", "gpus": 1}},
        "validation": {"benchmarks": ["lfw", "cfp_fp"]},
        "export": {},
    }
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    plan = _plan_of(config)
    job = plan.validation_job("big")
    assert (job.device, job.gpus) == ("cuda", 1)
    assert job.resources("snakemake7")["slurm_extra"] == "--gres=gpu:1"
    assert plan.runs["big"].resources("snakemake7")["slurm_extra"] == "--gres=gpu:4"
    nine = job.resources("slurm-plugin")
    assert nine["gpu"] == 1 and nine["slurm_extra"] is None  # Snakemake 9's SLURM executor refuses --gres there
    small = plan.validation_job("small")
    assert (small.device, small.engine, small.gpus, small.resources("snakemake7")["slurm_extra"]) == \
        ("cpu", "auto", 0, None)
    result = snakemake(workdir, "-n", "-p", "validate")
    assert result.returncode == 0, result.stdout
    assert job_counts(result.stdout)["validate_checkpoint"] == 4
    jobs = [block for block in re.split(r"\n(?=\[\w{3} \w{3} )", result.stdout) if "rule validate_checkpoint:" in block]
    big = [block for block in jobs if "wildcards: run=big" in block]
    small_jobs = [block for block in jobs if "wildcards: run=small" in block]
    assert len(big) == len(small_jobs) == 2
    for block in big:
        assert "gpu=1" in block and "slurm_extra=--gres=gpu:1" in block, block
        assert "--device cuda --engine auto" in block
        assert "output: " in block and "/lfw.json" in block and "/cfp_fp.json" in block
    for block in small_jobs:
        assert "gpu=0" in block and "--device cpu --engine auto" in block, block


@pytest.mark.parametrize("device, expected", [
    ("run", {"big": ("cuda", 1, 24000), "small": ("cpu", 0, 4000), "zoo": ("auto", 0, 4000)}),
    ("cpu", {"big": ("cpu", 0, 24000), "small": ("cpu", 0, 4000), "zoo": ("cpu", 0, 4000)}),
    ("cuda", {"big": ("cuda", 1, 24000), "small": ("cuda", 1, 4000), "zoo": ("cuda", 1, 24000)}),
])
def test_validation_device_setting(tmp_path: Path, device: str, expected: dict) -> None:
    """`validation.device`: `run` follows each run (published models on CPU), `cpu`/`cuda` put every job,
    models included, there; the GPU request and `--device` follow it."""
    (tmp_path / "backbone.pth").write_bytes(b"")
    config = {
        "datasets": {"synthetic": {"synthetic": {"classes": 8, "per_class": 4, "pairs": 20, "seed": 0}}},
        "runs": {"big": {"dataset": "synthetic", "device": "cuda", "gpus": 4},
                 "small": {"dataset": "synthetic", "device": "cpu", "gpus": 1}},
        "models": {"zoo": {"path": str(tmp_path / "backbone.pth"), "network": "r50"}},
        "validation": {"benchmarks": ["lfw"], "device": device},
        "export": {},
    }
    plan = _plan_of(config)
    for name, (want_device, gpus, mem_mb) in expected.items():
        job = plan.validation_job(name)
        assert (job.device, job.gpus, job.shape.mem_mb) == (want_device, gpus, mem_mb), name
        assert f"--device {want_device} --engine auto" in job.argument_string({"lfw": "x"})
        assert job.resources("snakemake7")["slurm_extra"] == ("--gres=gpu:1" if gpus else None)


def test_validation_device_must_be_known() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["validation"]["device"] = "gpu"
    with pytest.raises(ConfigError, match=r"validation\.device: 'gpu' is not one of \['run', 'cpu', 'cuda'\]"):
        _plan_of(config)


def test_lint_is_clean(workdir: Path) -> None:
    result = snakemake(workdir, "--lint")
    assert result.returncode == 0, result.stdout
    assert "Congratulations" in result.stdout


@pytest.mark.parametrize("setting, message", [
    ({"los": "cosface"}, "runs.demo_cosface.los: unknown key"),
    ({"fp16": True}, "runs.demo_cosface.fp16: mixed precision needs device: cuda"),  # a run that cannot start
])
def test_config_error_stops_the_workflow_naming_the_key(tmp_path: Path, setting: dict, message: str) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    config_file = workdir / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["runs"]["demo_cosface"].update(setting)
    config_file.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "all")
    assert result.returncode != 0
    assert message in result.stdout
    assert "Job stats" not in result.stdout  # stopped before planning any job


def _config_with(workdir: Path, name: str, entry: dict) -> None:
    base = workdir / "base.yaml"
    base.write_text(yaml.safe_dump({"network": "mbf", "batch_size": 8, "max_steps": 4, "checkpoint_every": 2}))
    config = {
        "datasets": {name: {**entry, "num_classes": 2, "num_images": 10}},
        "runs": {"r": {"dataset": name, "base": str(base), "device": "cpu"}},
        "validation": {"benchmarks": ["lfw"]},
        "export": {},
    }
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def _archive(path: Path) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for file, data in DATA.items():
            bundle.writestr(f"faces_emore/{file}", data)
    path.write_bytes(buffer.getvalue())
    return path


def test_download_rule_fetches_and_unpacks(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    _config_with(workdir, "emore", {"url": _archive(tmp_path / "faces_emore.zip").as_uri()})
    result = snakemake(workdir, "--cores", "1", "resources/datasets/emore/train.rec",
                       "resources/datasets/emore/lfw.bin")
    assert result.returncode == 0, result.stdout
    for file, data in DATA.items():
        assert (workdir / "resources" / "datasets" / "emore" / file).read_bytes() == data


def test_download_rule_applies_the_archive_caps(tmp_path: Path) -> None:
    """`max_members` (and `max_unpacked_bytes`) reach `faceflow download`: a 6-member archive is refused."""
    workdir = copy_workflow(tmp_path / "wf")
    _config_with(workdir, "emore", {"url": _archive(tmp_path / "faces_emore.zip").as_uri(), "max_members": 5,
                                    "max_unpacked_bytes": 1 << 20})
    result = snakemake(workdir, "--cores", "1", "resources/datasets/emore/train.rec")
    assert result.returncode != 0
    log = (workdir / "results" / "logs" / "datasets" / "emore.log").read_text().strip()
    assert len(log.splitlines()) == 1 and "more than 5 members (raise the cap with --max-members)" in log, log
    assert not (workdir / "resources" / "datasets" / "emore").exists()


def test_download_rule_offline_fails_clearly_without_partial_dataset(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    url = "http://127.0.0.1:9/faces_emore.zip"
    _config_with(workdir, "emore", {"url": url})
    result = snakemake(workdir, "--cores", "1", "resources/datasets/emore/train.rec")
    assert result.returncode != 0
    log = (workdir / "results" / "logs" / "datasets" / "emore.log").read_text().strip()
    assert log.splitlines() == [f"faceflow download: error: {url}: " + log.split(f"{url}: ", 1)[1]]
    assert "cannot download" in log
    dataset = workdir / "resources" / "datasets" / "emore"
    assert not dataset.exists() or not any(dataset.iterdir())


def test_local_directory_dataset_is_linked(tmp_path: Path) -> None:
    source = tmp_path / "faces_emore"
    source.mkdir()
    for file, data in DATA.items():
        (source / file).write_bytes(data)
    workdir = copy_workflow(tmp_path / "wf")
    _config_with(workdir, "mine", {"path": str(source)})
    result = snakemake(workdir, "--cores", "1", "resources/datasets/mine/train.rec", "resources/datasets/mine/lfw.bin")
    assert result.returncode == 0, result.stdout
    linked = workdir / "resources" / "datasets" / "mine" / "train.rec"
    assert linked.is_symlink() and linked.read_bytes() == DATA["train.rec"]


OFRECORD = {"train/part-00000": b"t0", "train/part-00001": b"t1", "lfw/part-0": b"l"}


def _ofrecord_config(workdir: Path, ofrecord: dict, **run: object) -> dict:
    base = workdir / "base.yaml"
    base.write_text(yaml.safe_dump({"network": "mbf", "batch_size": 8, "max_steps": 4, "checkpoint_every": 2}))
    config = {
        "datasets": {"port": {"ofrecord": ofrecord, "benchmarks": ["lfw"]}},  # no counts: faceflow train counts
        "runs": {"r": {"dataset": "port", "base": str(base), "device": "cpu", **run}},
        "validation": {"benchmarks": ["lfw"]},
        "export": {},
    }
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def _plan_of(config: dict):
    return build_plan(validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml"))


def test_ofrecord_dataset_is_planned_without_conversion_or_counts(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    config = _ofrecord_config(workdir, {"path": str(tmp_path / "port")})
    plan = _plan_of(config)
    assert plan.datasets["port"].ready_made and plan.datasets["port"].parts is None
    assert "num_classes" not in plan.runs["r"].overrides and plan.runs["r"].max_steps == 4
    config["runs"]["r"]["epochs"] = 2
    with pytest.raises(ConfigError, match=r"datasets\.port: num_images: needed to turn epochs into steps"):
        _plan_of(config)
    config["datasets"]["port"]["num_images"] = 80
    assert _plan_of(config).runs["r"].max_steps == 20
    config["datasets"]["port"]["parts"] = 2
    with pytest.raises(ConfigError, match=r"datasets\.port\.parts: an ofrecord dataset is trained on as it is"):
        _plan_of(config)
    config["datasets"]["port"] = {"ofrecord": {}}
    with pytest.raises(ConfigError, match=r"datasets\.port\.ofrecord: give exactly one of url, path"):
        _plan_of(config)
    result = snakemake(workdir, "-n", "all")
    assert result.returncode == 0, result.stdout
    counts = job_counts(result.stdout)
    assert counts["link_ofrecord_port"] == 1 and counts["train"] == 1 and counts["validate_checkpoint"] == 2
    assert "convert_train" not in counts and "convert_bin" not in counts
    assert "train_data=resources/datasets/port/train" in result.stdout
    assert "--bench lfw=resources/datasets/port/lfw" in result.stdout


def test_ofrecord_path_is_linked_and_url_unpacked(tmp_path: Path) -> None:
    source = tmp_path / "port data"  # a space: the path is quoted, not split
    for name, data in OFRECORD.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    targets = ["resources/datasets/port/train", "resources/datasets/port/lfw"]
    workdir = copy_workflow(tmp_path / "wf")
    _ofrecord_config(workdir, {"path": str(source)})
    result = snakemake(workdir, "--cores", "1", *targets)
    assert result.returncode == 0, result.stdout
    for name, data in OFRECORD.items():
        assert (workdir / "resources" / "datasets" / "port" / name).read_bytes() == data
    assert (workdir / targets[0]).is_symlink()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in OFRECORD.items():
            bundle.writestr(f"ofrecord/{name}", data)
    (tmp_path / "port.zip").write_bytes(buffer.getvalue())
    workdir = copy_workflow(tmp_path / "wf2")
    _ofrecord_config(workdir, {"url": (tmp_path / "port.zip").as_uri()})
    result = snakemake(workdir, "--cores", "1", *targets)
    assert result.returncode == 0, result.stdout
    for name, data in OFRECORD.items():
        assert (workdir / "resources" / "datasets" / "port" / name).read_bytes() == data
