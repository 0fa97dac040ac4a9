"""Early refusal: every key combination that cannot run is refused by the config checks, in one line naming
the keys, before any training process starts (`faceflow train`) and at `snakemake -n` time (the workflow plan)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_layer_samples import jpeg
from faceflow.data.ofrecord import PartsWriter, serialize_train_record
from faceflow.errors import ConfigError
from faceflow.train.config import DEFAULTS, validate_config
from faceflow.train.rules import check_gpus, check_run, check_train_data
from faceflow.workflow.config_check import validate_config as validate_workflow
from faceflow.workflow.plan import build_plan

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _config(**values) -> dict:
    return {**DEFAULTS, "max_steps": 100, "num_classes": 10, "num_images": 100, **values}


PFC = {"fc_mode": "partial_fc", "sample_rate": 0.5}
# (keys set, the key the message starts with, another key the message names)
REFUSED = [
    ({"graph": True, **PFC}, "fc_mode", "graph"),
    ({"partial_fc_fused_sampler": True, "device": "cpu", **PFC}, "partial_fc_fused_sampler", "device"),
    ({"partial_fc_fused_sampler": True, "device": "cuda"}, "partial_fc_fused_sampler", "fc_mode"),
    ({"fp16": True, "device": "cpu"}, "fp16", "device"),
    ({"sample_rate": 0.5, "fc_mode": "model_parallel"}, "sample_rate", "fc_mode"),
    ({"partial_fc_momentum": "reset"}, "partial_fc_momentum", "fc_mode"),
    ({"validate_every": 10}, "val_benchmarks", "validate_every"),
    ({"val_benchmarks": {"lfw": 3}}, "val_benchmarks.lfw", "path"),
    ({"lr_schedule": "poly", "lr_steps": [50], "scales": [0.1]}, "lr_steps", "lr_schedule"),
    ({"warmup_steps": 50, "lr_steps": [50], "scales": [0.1]}, "lr_steps", "warmup_steps"),
    ({"lr_steps": [50, 20], "scales": [0.1, 0.01]}, "lr_steps", "increasing"),
    ({"lr_steps": [50], "scales": []}, "scales", "lr_steps"),
    ({"lr_schedule": "poly", "warmup_steps": 100}, "warmup_steps", "poly"),
    ({"max_steps": 10, "epochs": 2}, "max_steps", "epochs"),
    ({"loss": "softmax", "margins": {"s": 30.0}}, "margins", "softmax"),
    ({"loss": "arcface", "margins": {"m4": 1.0}}, "margins.m4", "arcface"),
    ({"loss": "sphereface", "margins": {"m1": 1.0}}, "margins.m1", "sphereface"),
    ({"loss": "cosface", "margins": {"s": 0}}, "margins.s", "cosface"),
    ({"network": "r50", "network_kwargs": {"width_mult": 0.5}}, "network_kwargs.width_mult", "r50"),
    ({"network": "mbf", "network_kwargs": {"embedding_size": 8}}, "network_kwargs.embedding_size", "embedding_size"),
]


@pytest.mark.parametrize("values,key,other", REFUSED)
def test_each_combination_is_refused_in_one_line_naming_the_keys(values: dict, key: str, other: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(_config(**values))
    message = str(err.value)
    assert message.startswith(f"{key}: ") and other in message.split(": ", 1)[1] and "\n" not in message, message


def test_what_can_run_passes() -> None:
    for values in ({"device": "cuda", "fp16": True, "partial_fc_fused_sampler": True, **PFC},
                   {"graph": True, "fc_mode": "model_parallel"}, {"loss": "combined", "margins": {"s": 32}},
                   {"network": "mbf", "network_kwargs": {"width_mult": 0.5, "blocks": [1, 1, 1, 1]}},
                   {"lr_schedule": "poly", "warmup_steps": 99}, {"epochs": 1.5, "max_steps": None}):
        validate_config(_config(**values))


def test_device_auto_rules_wait_for_the_resolved_device() -> None:
    config = validate_config(_config(device="auto", fp16=True, partial_fc_fused_sampler=True, **PFC))
    check_run(config, 2, "cuda")
    with pytest.raises(ConfigError, match=r"^fp16: .*device: cuda"):
        check_run(config, 2, "cpu")


def test_run_rules_need_the_world_size() -> None:
    config = validate_config(_config(max_steps=None, epochs=1, lr_schedule="poly", warmup_steps=5, batch_size=10))
    check_run(config, 1, "cpu")  # one epoch of 100 images: 10 steps of 10 images on one process, 5 on two
    with pytest.raises(ConfigError, match=r"^warmup_steps: 5 leaves no steps for poly decay \(run has 5\)"):
        check_run(config, 2, "cpu")
    with pytest.raises(ConfigError, match=r"^nproc_per_node: 4 CUDA processes .* shows 2"):
        check_gpus(4, 2)
    check_gpus(2, 2)


def _ofrecord(directory: Path, parts: int) -> Path:
    """`parts` parts of one real record each (faceflow train decodes every record before it starts)."""
    with PartsWriter(directory, parts) as writer:
        for index in range(parts):
            writer.write(serialize_train_record(jpeg(index, 112), index))
    (directory / "meta.json").write_text(json.dumps({"classes": 10, "records": 100}))
    return directory


def test_train_data_rules(tmp_path: Path) -> None:
    data = _ofrecord(tmp_path / "of", 3)
    config = validate_config(_config(train_data=str(data)))
    check_train_data(config, 3)
    with pytest.raises(ConfigError, match=r"^train_data: .*3 OFRecord parts cannot be split evenly over 2 processes"):
        check_train_data(config, 2)
    missing = validate_config(_config(train_data=str(data), validate_every=5, val_benchmarks={"lfw": "nope.bin"}))
    with pytest.raises(ConfigError, match=r"^val_benchmarks\.lfw: nope\.bin: no such"):
        check_train_data(missing, 1)


_TRAIN_GUARDED = """
import sys
class _NoOneFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "oneflow" or name.startswith("oneflow."):
            raise ImportError(f"{name}: imported before the config was refused")
sys.meta_path.insert(0, _NoOneFlow())
from faceflow.cli.main import main
code = main(["train", "demo", "--out", "out", "--set", "train_data=of", *sys.argv[1:]])
assert code == 1 and "oneflow" not in sys.modules
"""


@pytest.mark.parametrize("args,message", [
    (["--set", "fp16=true"], "faceflow train: error: fp16: mixed precision needs device: cuda"),
    (["--set", "graph=true", "--set", "fc_mode=partial_fc"], "faceflow train: error: fc_mode: partial_fc runs in eager"),
    (["--set", "partial_fc_fused_sampler=true", "--set", "fc_mode=partial_fc", "--set", "graph=false"],
     "faceflow train: error: partial_fc_fused_sampler: the fused sampler is a CUDA kernel"),
    (["--nproc-per-node", "2"], "faceflow train: error: train_data: of: 3 OFRecord parts cannot be split evenly"),
])
def test_faceflow_train_refuses_before_any_process_starts(tmp_path: Path, args: list[str], message: str) -> None:
    """The refusal comes from the config checks: OneFlow is never imported, no worker starts, OUT is not made."""
    _ofrecord(tmp_path / "of", 3)
    proc = subprocess.run([sys.executable, "-c", _TRAIN_GUARDED, *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not (tmp_path / "out").exists()


def _workflow(**run) -> dict:
    return {"datasets": {"s": {"synthetic": {"classes": 10, "per_class": 4, "pairs": 20}}},
            "runs": {"demo": {"dataset": "s", "base": "demo", **run}},
            "validation": {"benchmarks": ["lfw"]}, "export": {}}


@pytest.mark.parametrize("run,message", [
    ({"fp16": True, "device": "cpu"}, "runs.demo.fp16: mixed precision needs device: cuda"),
    ({"fc_mode": "partial_fc", "graph": True}, "runs.demo.fc_mode: partial_fc runs in eager mode only"),
    ({"partial_fc_fused_sampler": True, "graph": False, "fc_mode": "partial_fc"},
     "runs.demo.partial_fc_fused_sampler: the fused sampler is a CUDA kernel"),
    ({"steps": 8}, "runs.demo.warmup_steps: 10 leaves no steps for poly decay (run has 8)"),
    ({"threads": 0}, "config: runs.demo.threads: expected an integer > 0, got 0"),
    ({"lr_steps": [0]}, "config: runs.demo.lr_steps: expected a list of integers, each > 0, got [0]"),
    ({"network": "r7"}, "config: runs.demo.network: expected one of mbf, r100"),
    ({"epochs": 1, "gpus": 2}, "runs.demo.warmup_steps: 10 leaves no steps for poly decay (run has 1)"),
])
def test_the_workflow_plan_refuses_with_the_run_key(run: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_plan(validate_workflow(_workflow(**run), SCHEMA))
    assert str(err.value).startswith(message), str(err.value)


def test_device_auto_is_decided_at_train_time_in_the_workflow() -> None:
    plan = build_plan(validate_workflow(_workflow(device="auto", fp16=True), SCHEMA))
    assert plan.runs["demo"].device == "auto" and plan.runs["demo"].train_config["fp16"] is True
