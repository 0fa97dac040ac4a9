"""Config values reach the rules' shell commands literally: hostile paths, bases and names (issue 18.4)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from faceflow.errors import ConfigError
from faceflow.workflow.config_check import validate_config
from faceflow.workflow.plan import build_plan
from workflow_helpers import REPO, copy_workflow, snakemake

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
HOSTILE = 'we ird "q" \'s\' $(touch {marker}) `touch {marker}`'
FILES = {"train.rec": b"r" * 64, "train.idx": b"0\t0\n", "property": b"2,112,112\n", "lfw.bin": b"l"}


def _write_config(workdir: Path, dataset: dict, base: str) -> None:
    config = {
        "datasets": {"mine": {**dataset, "benchmarks": ["lfw"], "num_classes": 2, "num_images": 8}},
        "runs": {"r": {"dataset": "mine", "base": base, "device": "cpu", "steps": 4, "checkpoint_every": 2}},
        "validation": {"benchmarks": ["lfw"]},
        "export": {"formats": ["onnx"]},
    }
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def test_hostile_path_and_base_are_taken_literally(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    source = tmp_path / HOSTILE.format(marker=marker).replace("/", "_")
    source.mkdir()
    for name, data in FILES.items():
        (source / name).write_bytes(data)
    base = source / "base config.yaml"
    base.write_text(yaml.safe_dump({"network": "mbf", "batch_size": 8, "max_steps": 4}))
    workdir = copy_workflow(tmp_path / "wf")
    _write_config(workdir, {"path": str(source)}, str(base))

    linked = snakemake(workdir, "--cores", "1", "resources/datasets/mine/train.rec", "resources/datasets/mine/lfw.bin")
    assert linked.returncode == 0, linked.stdout
    assert (workdir / "resources" / "datasets" / "mine" / "train.rec").read_bytes() == FILES["train.rec"]

    dry = snakemake(workdir, "-n", "-p", "--forceall", "results/runs/r/train.json")
    assert dry.returncode == 0, dry.stdout
    train = next(line.strip() for line in dry.stdout.splitlines() if line.strip().startswith("faceflow train "))
    words = shlex.split(train)
    assert words[2] == str(base)  # faceflow train BASE --set ...
    assert not marker.exists()


@pytest.mark.parametrize("section", ["datasets", "runs", "models"])
@pytest.mark.parametrize("name", [".hidden", "-rf", "a b", "x/../y"])
def test_names_that_a_shell_or_a_path_would_misread_are_refused(section: str, name: str) -> None:
    config = {
        "datasets": {"synthetic": {"synthetic": {"classes": 4, "per_class": 2, "pairs": 20, "seed": 0}}},
        "runs": {"r": {"dataset": "synthetic", "base": "demo"}},
        "validation": {"benchmarks": ["lfw"]},
        "export": {},
    }
    entry = {"datasets": config["datasets"]["synthetic"], "runs": config["runs"]["r"],
             "models": {"path": "/m/backbone.pth", "network": "r50", "dataset": "synthetic"}}[section]
    config.setdefault(section, {})[name] = entry
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    message = str(info.value)
    assert message.startswith(f"config: {section}") and repr(name) in message and "\n" not in message


def test_reordering_a_run_entry_keeps_its_train_parameters() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    reordered = yaml.safe_load(yaml.safe_dump(config, sort_keys=True))
    first, second = (build_plan(validate_config(c, SCHEMA)) for c in (config, reordered))
    for name in first.runs:
        assert first.runs[name].set_argument_string("D") == second.runs[name].set_argument_string("D")
