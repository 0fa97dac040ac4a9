"""Workflow config: schema errors name the key; the run plan (steps, checkpoints, parts, --set args)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from faceflow.errors import ConfigError
from faceflow.train.config import apply_overrides, total_steps
from faceflow.workflow.config_check import validate_config
from faceflow.workflow.plan import build_plan, expected_checkpoint_steps, ofrecord_parts
from faceflow.workflow.selection import main as selection_main
from faceflow.workflow.selection import select_checkpoint

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture()
def base_yaml(tmp_path: Path) -> str:
    """A small training config file used as `base` (independent of the shipped configs)."""
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"network": "mbf", "batch_size": 16, "max_steps": 50, "checkpoint_every": 20}))
    return str(path)


def _config(base: str) -> dict:
    return {
        "datasets": {"synthetic": {"synthetic": {"classes": 10, "per_class": 8, "pairs": 40, "seed": 1}}},
        "runs": {
            "a": {"dataset": "synthetic", "base": base, "loss": "arcface", "steps": 45, "checkpoint_every": 20},
            "b": {"dataset": "synthetic", "base": base, "loss": "cosface", "epochs": 3, "gpus": 2,
                  "margins": {"m1": 1.0, "m2": 0.0, "m3": 0.35, "s": 32.0}},
        },
        "validation": {"benchmarks": ["lfw", "agedb_30"], "batch_size": 32},
        "export": {"formats": ["onnx"], "checkpoint": "best:lfw"},
    }


def _plan(config: dict):
    return build_plan(validate_config(config, SCHEMA))


def test_shipped_config_is_valid() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    filled = validate_config(config, SCHEMA)
    assert len(filled["runs"]) == 2
    assert filled["validation"]["benchmarks"] == ["lfw", "cfp_fp", "agedb_30"]


def test_commented_out_example_runs_plan_when_uncommented() -> None:
    """config.yaml's commented demo_vit and demo_adaface entries are valid runs once uncommented."""
    text = (REPO / "config" / "config.yaml").read_text()
    start = text.index("  # demo_vit:\n")
    block = text[start:text.index("  # A GPU run", start)]
    config = yaml.safe_load(text)
    config["runs"].update(yaml.safe_load("\n".join(line.replace("  # ", "  ", 1) for line in block.splitlines())))
    plan = build_plan(validate_config(config, SCHEMA))
    assert plan.runs["demo_vit"].train_config["network"] == "vit_t"
    assert (plan.runs["demo_adaface"].train_config["loss"], plan.runs["demo_adaface"].train_config["graph"]) == \
        ("adaface", False)


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["runs"]["a"].update(lossx="arcface"), "runs.a.lossx: unknown key"),
        (lambda c: c["runs"]["a"].update(loss="arcfase"), "runs.a.loss"),
        (lambda c: c["runs"]["a"].update(gpus=0), "runs.a.gpus"),
        (lambda c: c["runs"]["b"]["margins"].update(m4=1), "runs.b.margins.m4: unknown key"),
        (lambda c: c["validation"].update(batchsize=3), "validation.batchsize: unknown key"),
        (lambda c: c["validation"].update(benchmarks=["lfw", "megaface"]), "validation.benchmarks[1]"),
        (lambda c: c["export"].update(checkpoint="best"), "export.checkpoint"),
        (lambda c: c.update(extra=1), "extra: unknown key"),
        (lambda c: c["datasets"]["synthetic"].update(url="file:///x.zip"), "datasets.synthetic: give exactly one"),
        (lambda c: c["datasets"]["synthetic"]["synthetic"].update(classes="many"), "datasets.synthetic.synthetic.classes"),
        (lambda c: c["datasets"]["synthetic"].update(max_members=5), "datasets.synthetic: 'url' is a dependency of"),
        (lambda c: c["datasets"].update(emore={"url": "file:///e.zip", "max_unpacked_bytes": 0}),
         "datasets.emore.max_unpacked_bytes"),
        (lambda c: c["datasets"].update(port={"ofrecord": {"path": "/data/port", "max_members": 5}}),
         "datasets.port.ofrecord: 'url' is a dependency of 'max_members'"),
        (lambda c: c["datasets"].update(emore={"url": "ftp://x"}), "datasets.emore.url"),
        (lambda c: c["runs"]["a"].pop("dataset"), "runs.a.dataset: required"),
    ],
)
def test_schema_errors_name_the_key(base_yaml: str, mutate, key: str) -> None:
    config = _config(base_yaml)
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    message = str(info.value)
    assert key in message and "\n" not in message


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["runs"]["a"].update(dataset="emore"), "runs.a.dataset"),
        (lambda c: c["datasets"]["synthetic"].update(parts=3), "datasets.synthetic.parts"),
        (lambda c: c["datasets"]["synthetic"].update(benchmarks=["lfw"]), "validation.benchmarks"),
        (lambda c: c["export"].update(checkpoint="best:cfp_fp"), "export.checkpoint"),
        (lambda c: c["runs"]["a"].update(base="no_such_config"), "runs.a"),
        (lambda c: c["runs"]["a"].update(sample_rate=0.5), "runs.a.sample_rate: < 1.0 needs fc_mode: partial_fc"),
        (lambda c: c["runs"]["a"].update(epochs=2), "runs.a.steps: set exactly one of steps and epochs"),
        (lambda c: c["datasets"].update(emore={"path": "/data/emore"}) or c["runs"]["a"].update(dataset="emore"),
         "datasets.emore.num_classes"),
    ],
)
def test_plan_conflicts_name_the_key(base_yaml: str, mutate, key: str) -> None:
    config = _config(base_yaml)
    mutate(config)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        _plan(config)


def test_plan_steps_checkpoints_and_parts(base_yaml: str) -> None:
    plan = _plan(_config(base_yaml))
    a, b = plan.runs["a"], plan.runs["b"]
    assert a.checkpoint_steps == (20, 40, 45)
    assert plan.validation_steps("a") == ["000020", "000040", "000045"]
    # run b: 3 epochs of 80 images at 16 per process x 2 processes, as `faceflow train` counts them
    assert b.max_steps == total_steps({"max_steps": None, "epochs": 3, "num_images": 80, "batch_size": 16}, 2)
    assert b.checkpoint_steps == (b.max_steps,)
    assert plan.datasets["synthetic"].parts == 2 and b.world_size == 2
    assert plan.benchmarks == ("lfw", "agedb_30") and plan.val_batch_size == 32
    assert plan.export_bench() == "lfw"
    assert a.gpu_resource == 0 and a.device == "cpu"


def test_set_arguments_round_trip_through_train_overrides(base_yaml: str) -> None:
    run = _plan(_config(base_yaml)).runs["b"]
    args = run.set_arguments("results/ofrecord/synthetic/train")
    assert args[0::2] == ["--set"] * (len(args) // 2)
    parsed = apply_overrides({}, args[1::2])
    assert parsed["margins"] == {"m1": 1.0, "m2": 0.0, "m3": 0.35, "s": 32.0}
    assert parsed["loss"] == "cosface" and parsed["epochs"] is None and parsed["max_steps"] == run.max_steps
    assert parsed["train_data"] == "results/ofrecord/synthetic/train" and parsed["num_classes"] == 10
    assert "val_benchmarks" not in parsed and "val_batch_size" not in parsed and parsed["validate_every"] == 0


def test_validation_settings_do_not_reach_training(base_yaml: str) -> None:
    config = _config(base_yaml)
    other = copy.deepcopy(config)
    other["validation"] = {"benchmarks": ["lfw"], "batch_size": 7}
    first, second = _plan(config), _plan(other)
    for name in first.runs:
        assert first.runs[name].set_arguments("x") == second.runs[name].set_arguments("x")
    assert first.datasets == second.datasets


def test_step_helpers() -> None:
    assert expected_checkpoint_steps(100, 50) == (50, 100)
    assert expected_checkpoint_steps(30, 50) == (30,)
    assert ofrecord_parts([1, 2, 3], None, "k") == 6
    assert ofrecord_parts([4, 2], 8, "k") == 8
    with pytest.raises(ConfigError, match="k: 6 parts"):
        ofrecord_parts([4], 6, "k")


def _fake_run(tmp_path: Path, accuracies: dict[int, float]) -> tuple[Path, Path]:
    checkpoints, validation = tmp_path / "checkpoints", tmp_path / "validation"
    for step, accuracy in accuracies.items():
        (checkpoints / f"step_{step:06d}").mkdir(parents=True)
        (checkpoints / f"step_{step:06d}" / "state.json").write_text("{}")
        (validation / f"step_{step:06d}").mkdir(parents=True)
        (validation / f"step_{step:06d}" / "lfw.json").write_text(f'{{"benchmark": "lfw", "accuracy": {accuracy}}}')
    return checkpoints, validation


def test_checkpoint_selection(tmp_path: Path) -> None:
    checkpoints, validation = _fake_run(tmp_path, {10: 0.7, 20: 0.9, 30: 0.8})
    assert select_checkpoint("last", checkpoints, validation).name == "step_000030"
    assert select_checkpoint("best:lfw", checkpoints, validation).name == "step_000020"
    with pytest.raises(Exception, match="cfp_fp.json"):
        select_checkpoint("best:cfp_fp", checkpoints, validation)


def test_selection_command_prints_the_checkpoint(tmp_path: Path, capsys) -> None:
    checkpoints, validation = _fake_run(tmp_path, {5: 0.6, 10: 0.55})
    assert selection_main(["best:lfw", str(checkpoints), str(validation)]) == 0
    assert capsys.readouterr().out.strip() == str(checkpoints / "step_000005")
    assert selection_main(["best:lfw", str(tmp_path / "none"), str(validation)]) == 1
    assert "no complete checkpoint" in capsys.readouterr().err


def test_gpu_run_resources_and_parts(base_yaml: str) -> None:
    config = _config(base_yaml)
    config["runs"]["c"] = {"dataset": "synthetic", "base": base_yaml, "device": "cuda", "gpus": 4, "steps": 10}
    plan = _plan(config)
    c = plan.runs["c"]
    assert (c.gpu_resource, c.slurm_extra, c.world_size) == (4, "--gres=gpu:4", 4)
    assert plan.runs["a"].slurm_extra == "" and plan.runs["a"].gpu_resource == 0
    assert plan.datasets["synthetic"].parts == 4  # lcm of world sizes 1, 2 and 4
    ports = {run.master_port for run in plan.runs.values()}
    assert len(ports) == 3 and all(1024 < port < 65536 for port in ports)


def test_processes_and_threads_default_to_the_base_config(base_yaml: str) -> None:
    config = _config(base_yaml)
    config["runs"]["d"] = {"dataset": "synthetic", "base": "demo", "steps": 20}  # demo: 2 processes x 1 thread
    config["runs"]["e"] = {"dataset": "synthetic", "base": "demo", "steps": 20, "gpus": 1, "threads": 2}
    plan = _plan(config)
    assert (plan.runs["d"].gpus, plan.runs["d"].threads) == (2, 1)
    assert (plan.runs["e"].gpus, plan.runs["e"].threads) == (1, 2)
    assert plan.runs["e"].train_config["num_threads"] == 2
    assert (plan.runs["a"].gpus, plan.runs["a"].threads) == (1, 2)  # a base without them: 1 process, 2 threads
