"""One source of truth: names come from the registries, keys from one table; every place that uses them agrees.

Each test here fails the day two places disagree: a registry read from the source vs what importing the
families registers, the training checks vs the workflow schema, a name list copied into a file.
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from faceflow.errors import ConfigError
from faceflow.eval.benchmark_names import BENCHMARK_TITLES, BENCHMARKS
from faceflow.heads.registry import FC_MODES, LOSSES, list_losses, margin_names
from faceflow.models.registry import MODELS, list_models
from faceflow.train.config import DEFAULTS, load_config, validate_config
from faceflow.train.keys import KEY_BY_NAME, KEYS, RUN_KEYS, json_property, parse_bounds
from faceflow.train.resume import RESUME_FREE_KEYS, config_differences
from faceflow.train.rules import check_run
from faceflow.workflow import config_check
from faceflow.workflow.plan import build_plan
from faceflow.workflow.resources import JOB_KEYS

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_static_listing_equals_what_importing_the_families_registers() -> None:
    models = MODELS.load_all()
    assert sorted(models) == list_models()
    assert {"r18", "r34", "r50", "r100", "r200", "mbf"} <= set(models)
    for name, declaration in MODELS.declared().items():
        assert sys.modules[declaration.module].__dict__[models[name].__name__] is models[name]
    losses = LOSSES.load_all()
    assert sorted(losses) == list_losses()
    for name, declaration in LOSSES.declared().items():
        assert declaration.options.get("margins") == losses[name].margins
        assert (declaration.options.get("greater_than") or {}) == losses[name].greater_than
        assert (declaration.options.get("at_most") or {}) == losses[name].at_most
        margins = set(losses[name].margins or {})
        bounded = {**losses[name].greater_than, **losses[name].at_most}
        assert set(bounded) <= margins, name
        assert {b for b in losses[name].greater_than.values() if isinstance(b, str)} <= margins, name


def test_a_registration_without_a_literal_name_is_refused(tmp_path: Path) -> None:
    from faceflow.registry import Registry

    (tmp_path / "fam.py").write_text("NAMES = ['a']\nfor n in NAMES:\n    register_thing(n)\n")
    with pytest.raises(ConfigError, match=r"fam\.py:3: register_thing\(\) needs a literal name"):
        Registry("pkg", tmp_path, "register_thing", "thing", "thing").names()


def test_training_checks_and_the_workflow_schema_take_names_from_the_registries() -> None:
    schema = config_check.load_schema(SCHEMA)
    run = schema["definitions"]["run"]["properties"]
    assert KEY_BY_NAME["network"].allowed() == tuple(list_models()) == tuple(run["network"]["enum"])
    assert KEY_BY_NAME["loss"].allowed() == tuple(list_losses()) == tuple(run["loss"]["enum"])
    assert KEY_BY_NAME["fc_mode"].allowed() == FC_MODES == tuple(run["fc_mode"]["enum"])
    declared = {key for d in LOSSES.declared().values() for key in (d.options.get("margins") or {})}
    assert sorted(run["margins"]["properties"]) == margin_names() == sorted(declared)
    assert {"m1", "m2", "m3", "s"} <= declared
    assert schema["definitions"]["benchmark"]["enum"] == list(BENCHMARKS) == list(BENCHMARK_TITLES)
    checkpoint = re.compile(schema["properties"]["export"]["properties"]["checkpoint"]["pattern"])
    assert all(checkpoint.match(f"best:{bench}") for bench in BENCHMARKS)
    assert checkpoint.match("last") and not checkpoint.match("best:megaface")
    assert set(run) == {"dataset", "base"} | set(RUN_KEYS) | set(JOB_KEYS)


def test_no_file_keeps_a_copy_of_a_name_list() -> None:
    committed = yaml.safe_load(SCHEMA.read_text())
    static_run = set(committed["definitions"]["run"]["properties"])
    assert static_run == {"dataset", "base"}, "training keys belong in faceflow/train/keys.py, job keys in faceflow/workflow/resources.py"
    text = SCHEMA.read_text() + (REPO / "workflow" / "rules" / "common.smk").read_text()
    for name in list_models() + list_losses() + list(BENCHMARKS) + list(FC_MODES):
        assert not re.search(rf"[\[\s,|(]{re.escape(name)}[\]\s,|)]", text), name
    from faceflow.data import synth
    from faceflow.report import tables

    assert synth.BENCHMARKS is BENCHMARKS and tables.BENCHMARK_TITLES is BENCHMARK_TITLES
    assert RESUME_FREE_KEYS == {key.name for key in KEYS if key.resume_free}


def _probes(key) -> list:
    """Values around a key's bounds and choices, and values of the wrong type."""
    values: list = [None, True, "x", [1], {"a": 1}, 0, 1, 2, -1, 0.5, 1.5, float("nan"), float("inf")]
    bounds = parse_bounds(key.bounds)
    for edge in (bounds.low, bounds.high):
        if edge is not None:
            values += [edge, edge - 1, edge + 1, edge - 0.25, edge + 0.25, int(edge)]
    values += list(key.allowed()) + ["not_a_choice"]
    if key.kind in ("ints", "numbers"):
        values += [[], [1, 2], [0.5], [0], [2, 1], ["a"]]
    return values


def _workflow_accepts(run_key: str, value) -> bool:
    config = {
        "datasets": {"s": {"synthetic": {"classes": 10, "per_class": 4, "pairs": 20}}},
        "runs": {"a": {"dataset": "s", "base": "demo", run_key: value}},
        "validation": {"benchmarks": ["lfw"]}, "export": {},
    }
    try:
        build_plan(config_check.validate_config(config, SCHEMA))
    except ConfigError:
        return False
    return True


def _train_accepts(name: str, value) -> bool:
    """What `faceflow train demo --set NAME=VALUE` refuses before starting a process (on the workflow's data)."""
    overrides = {name: copy.deepcopy(value), "num_classes": 10, "num_images": 40, "validate_every": 0}
    if name in ("max_steps", "epochs"):  # the run's length replaces the base config's, as in the workflow
        overrides["epochs" if name == "max_steps" else "max_steps"] = None
    try:
        config = validate_config({**load_config("demo"), **overrides})
        if config["device"] != "auto":
            check_run(config, config["nproc_per_node"], config["device"])
    except ConfigError:
        return False
    return True


@pytest.fixture()
def fast_yaml(monkeypatch):
    """libyaml's safe loader (same values, several times faster): the probes below read each config many times."""
    monkeypatch.setattr(yaml, "safe_load", lambda text: yaml.load(text, Loader=yaml.CSafeLoader))


@pytest.mark.parametrize("run_key", sorted(RUN_KEYS))
def test_workflow_and_faceflow_train_accept_the_same_values(run_key: str, fast_yaml) -> None:
    name = RUN_KEYS[run_key]
    key = KEY_BY_NAME[name]
    schema = jsonschema.Draft7Validator(json_property(key))
    for value in _probes(key):
        train, workflow = _train_accepts(name, value), _workflow_accepts(run_key, value)
        assert train == workflow, f"{run_key}={value!r}: faceflow train {train}, workflow {workflow}"
        assert schema.is_valid(value) or not train, f"{run_key}={value!r}: the schema alone is stricter"


def test_the_workflow_passes_every_run_key_under_its_training_name() -> None:
    entry = {"dataset": "s", "base": "demo", "steps": 30, "threads": 3, "gpus": 1, "lr": 0.2, "fc_mode": "partial_fc",
             "sample_rate": 0.5, "graph": False}
    config = {"datasets": {"s": {"synthetic": {"classes": 10, "per_class": 4, "pairs": 20}}}, "runs": {"a": entry},
              "validation": {"benchmarks": ["lfw"]}, "export": {}}
    run = build_plan(config_check.validate_config(config, SCHEMA)).runs["a"]
    sets = dict(arg.split("=", 1) for arg in run.set_arguments("D")[1::2])
    assert (sets["max_steps"], sets["num_threads"], sets["nproc_per_node"], sets["lr"]) == ("30", "3", "1", "0.2")
    assert (sets["fc_mode"], sets["sample_rate"], sets["graph"], sets["epochs"]) == ("partial_fc", "0.5", "false", "null")
    assert (run.threads, run.gpus, run.max_steps) == (3, 1, 30)


def test_errors_name_the_key_as_each_tool_spells_it() -> None:
    with pytest.raises(ConfigError, match=r"^lr: expected a finite number > 0, got -1"):
        validate_config({**DEFAULTS, "max_steps": 5, "lr": -1})
    config = {"datasets": {"s": {"synthetic": {"classes": 10, "per_class": 4, "pairs": 20}}},
              "runs": {"demo": {"dataset": "s", "base": "demo", "lr": float("nan")}},
              "validation": {"benchmarks": ["lfw"]}, "export": {}}
    with pytest.raises(ConfigError, match=r"^runs\.demo\.lr: expected a finite number > 0, got nan"):
        build_plan(config_check.validate_config(config, SCHEMA))
    config["runs"]["demo"] = {"dataset": "s", "base": "demo", "steps": 5, "epochs": 1}
    with pytest.raises(ConfigError, match=r"^runs\.demo\.steps: set exactly one of steps and epochs$"):
        build_plan(config_check.validate_config(config, SCHEMA))
    config["runs"]["demo"] = {"dataset": "s", "base": "demo", "lr": "1e-3"}  # PyYAML's string for 1e-3
    assert build_plan(config_check.validate_config(config, SCHEMA)).runs["demo"].train_config["lr"] == 1e-3


def test_image_size_is_gone_and_old_checkpoints_still_resume() -> None:
    assert "image_size" not in DEFAULTS
    with pytest.raises(ConfigError, match=r"^image_size: unknown config key"):
        validate_config({**DEFAULTS, "max_steps": 5, "image_size": 112})
    config = validate_config({**DEFAULTS, "max_steps": 5, "num_classes": 4, "num_images": 20})
    saved = {**config, "image_size": 112}  # what checkpoints written before the key's removal hold
    assert config_differences(saved, {"step": 2, "total_steps": 5}, config, 1) == []


_TOY_NET = '''
from faceflow.runtime.flow import nn

from faceflow.models.registry import register_model


@register_model("toynet")
def toynet(embedding_size: int = 512, dropout: float = 0.0, width: int = 4) -> nn.Module:
    """A one-layer backbone added by its own file only."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, width), nn.Linear(width, embedding_size))
'''
_TOY_LOSS = '''
from faceflow.runtime.flow import flow, nn

from faceflow.heads.registry import register_loss


class ToyHead(nn.Module):
    def __init__(self, margins: dict) -> None:
        super().__init__()
        self.t = margins["t"]

    def forward(self, embeddings: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
        return (embeddings * self.t).sum()


register_loss("toyloss", margins={"t": 0.5, "s": 30.0}, greater_than={"s": 0.0},
              head=lambda config, placement, margins: ToyHead(margins))
'''
_STATIC_CHECKS = '''
import sys
class _NoOneFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "oneflow" or name.startswith("oneflow."):
            raise ImportError(name)
sys.meta_path.insert(0, _NoOneFlow())
from faceflow.errors import ConfigError
from faceflow.train.config import load_config
from faceflow.workflow.config_check import load_schema, validate_config
from faceflow.workflow.plan import build_plan
from faceflow.workflow.resources import JOB_KEYS
config = load_config("demo", ["network=toynet", "network_kwargs={width: 8}", "loss=toyloss", "margins={t: 0.25}"])
assert (config["network"], config["loss"]) == ("toynet", "toyloss")
for bad, key in (("network_kwargs={depth: 2}", "network_kwargs.depth"), ("margins={m1: 1.0}", "margins.m1"),
                 ("margins={s: 0}", "margins.s")):
    try:
        load_config("demo", ["network=toynet", "loss=toyloss", bad])
        raise SystemExit(f"accepted {bad}")
    except ConfigError as err:
        assert str(err).startswith(key + ":"), err
schema = load_schema(SCHEMA)
run = schema["definitions"]["run"]["properties"]
assert "toynet" in run["network"]["enum"] and "toyloss" in run["loss"]["enum"] and "t" in run["margins"]["properties"]
workflow = {"datasets": {"s": {"synthetic": {"classes": 10, "per_class": 4, "pairs": 20}}},
            "runs": {"toy": {"dataset": "s", "network": "toynet", "network_kwargs": {}, "loss": "toyloss",
                             "margins": {"t": 0.1}}},
            "validation": {"benchmarks": ["lfw"]}, "export": {}}
plan = build_plan(validate_config(workflow, SCHEMA))
assert plan.runs["toy"].train_config["margins"] == {"t": 0.1}
assert "oneflow" not in sys.modules
print("static ok")
'''
_BUILD_CHECKS = '''
from faceflow.runtime.flow import flow
from faceflow.heads import build_head
from faceflow.models import build_backbone
from faceflow.runtime.device import all_ranks_placement
model = build_backbone("toynet", 16, dropout=0.0, width=8)
assert tuple(model(flow.zeros(2, 3, 112, 112)).shape) == (2, 16)
head = build_head({"loss": "toyloss", "margins": {"t": 2.0}}, all_ranks_placement("cpu"))
assert type(head).__name__ == "ToyHead" and head.t == 2.0
print("build ok")
'''


def test_a_new_backbone_and_loss_touch_only_their_own_files(tmp_path: Path) -> None:
    """A copy of the package plus one new file per family: the config checks, the generated workflow
    schema, the plan and the builders all know the new names; no other file changes."""
    shutil.copytree(REPO / "faceflow", tmp_path / "faceflow", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "faceflow" / "models" / "toynet.py").write_text(_TOY_NET)
    (tmp_path / "faceflow" / "heads" / "toyloss.py").write_text(_TOY_LOSS)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    static = subprocess.run([sys.executable, "-c", f"SCHEMA = {str(SCHEMA)!r}\n" + textwrap.dedent(_STATIC_CHECKS)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert static.returncode == 0 and "static ok" in static.stdout, static.stderr
    built = subprocess.run([sys.executable, "-c", _BUILD_CHECKS], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=300)
    assert built.returncode == 0 and "build ok" in built.stdout, built.stderr


def test_faceflow_keys_prints_the_table(capsys) -> None:
    from faceflow.cli.main import main

    assert main(["keys"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [key.name for key in KEYS]
    steps = next(row for row in rows if row.startswith("| `max_steps`"))
    assert "| `steps` |" in steps and "> 0" in steps
    network = next(row for row in rows if row.startswith("| `network`"))
    assert all(name in network for name in list_models())
