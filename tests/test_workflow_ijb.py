"""IJB in the workflow: the `ijb:` config section and its plan, one job per run and target on the exported
model, the report's IJB table and ROC, and that changing only IJB settings reruns only IJB and the report."""
from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from faceflow.cli.main import main as faceflow_main
from faceflow.errors import ConfigError
from faceflow.eval.ijb_layout import TARGETS
from faceflow.workflow.config_check import validate_config
from faceflow.workflow.exported import exported_model
from faceflow.workflow.plan import build_plan
from workflow_helpers import REPO, copy_workflow, job_counts, snakemake, tiny_run_workflow

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _plan(config: dict):
    return build_plan(validate_config(config, SCHEMA))


def test_default_config_evaluates_every_run_on_the_synthetic_ijb_sets() -> None:
    plan = _plan(_default_config())
    assert plan.ijb.targets == ("IJBC", "IJBB") and plan.ijb.dataset == "synthetic" and plan.ijb.path is None
    assert plan.datasets["synthetic"].writes_ijb
    assert plan.datasets["synthetic"].ijb_files() == {
        "IJBC": "ijb/IJBC/meta/ijbc_template_pair_label.txt", "IJBB": "ijb/IJBB/meta/ijbb_template_pair_label.txt"}


def test_target_names_come_from_the_ijb_reader() -> None:
    config = _default_config()
    config["ijb"]["targets"] = ["IJBA"]
    with pytest.raises(ConfigError, match=r"ijb\.targets\[0\]: 'IJBA' is not one of \['IJBC', 'IJBB'\]"):
        validate_config(config, SCHEMA)
    assert validate_config(_default_config(), SCHEMA)["ijb"]["batch_size"] == 128
    assert list(TARGETS) == ["IJBC", "IJBB"]


def test_a_config_without_ijb_section_plans_no_ijb() -> None:
    config = _default_config()
    del config["ijb"]
    plan = _plan(config)
    assert plan.ijb.targets == () and plan.ijb.dataset is None


def _with(config: dict, change) -> dict:
    config = copy.deepcopy(config)
    change(config)
    return config


@pytest.mark.parametrize("change, message", [
    (lambda c: c["datasets"]["synthetic"]["synthetic"].update(ijb_identities=0),
     r"ijb\.path: required for targets IJBC, IJBB: no synthetic dataset writes an IJB set"),
    (lambda c: c["datasets"]["synthetic"]["synthetic"].update(ijb_identities=3),
     r"datasets\.synthetic\.synthetic\.ijb_identities: need 0 \(no IJB sets\) or at least 4"),
    (lambda c: c["datasets"]["synthetic"]["synthetic"].update(ijb_identities=-1),
     r"datasets\.synthetic\.synthetic\.ijb_identities: -1 is less than the minimum of 0"),
    (lambda c: c["ijb"].update(dataset="nope"), r"ijb\.dataset: unknown dataset 'nope'"),
    (lambda c: c["ijb"].update(dataset="synthetic", path="/data/ijb"), r"ijb: give path .* or dataset .*, not both"),
    (lambda c: c["ijb"].update(target=["IJBC"]), r"ijb\.target: unknown key"),
    (lambda c: c["datasets"].update(other={"synthetic": {"classes": 4}}),
     r"ijb\.dataset: required when several synthetic datasets write IJB sets \(synthetic, other\)"),
    (lambda c: (c["datasets"].update(mine={"path": "/data/mine", "num_classes": 2, "num_images": 4}),
                c["ijb"].update(dataset="mine")), r"ijb\.dataset: mine writes no IJB set \(only faceflow synth"),
])
def test_bad_ijb_settings_name_the_key(change, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _plan(_with(_default_config(), change))


def test_ijb_source_choices() -> None:
    config = _with(_default_config(), lambda c: c["ijb"].update(path="/data/ijb"))
    config["datasets"]["synthetic"]["synthetic"]["ijb_identities"] = 0
    plan = _plan(config)
    assert plan.ijb.path == "/data/ijb" and plan.ijb.dataset is None
    # a second synthetic dataset that nothing trains on is built when IJB reads it
    config = _with(_default_config(), lambda c: c["datasets"].update(ijb_only={"synthetic": {"classes": 4}}))
    config["ijb"]["dataset"] = "ijb_only"
    plan = _plan(config)
    assert plan.ijb.dataset == "ijb_only" and plan.used_datasets() == ["ijb_only", "synthetic"]


def test_exported_model_is_the_onnx_else_the_checkpoint(tmp_path: Path, capsys) -> None:
    export = tmp_path / "export"
    export.mkdir()
    record = {"checkpoint": "results/runs/r/checkpoints/step_000040", "formats": {"onnx": {"path": "model.onnx"}}}
    (export / "export.json").write_text(json.dumps(record))
    assert exported_model(export) == export / "model.onnx"
    record["formats"] = {"mxnet": {"path": "mxnet/model-symbol.json"}}
    (export / "export.json").write_text(json.dumps(record))
    assert exported_model(export) == Path("results/runs/r/checkpoints/step_000040")
    (export / "export.json").write_text("[1]")
    assert faceflow_main(["exported-model", str(export)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(export / "export.json") in err and "'formats'" in err


def test_dry_run_has_one_ijb_job_per_run_model_and_target(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    config_file = workdir / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    (tmp_path / "backbone.pth").write_bytes(b"")
    config["models"] = {"zoo_r50": {"path": str(tmp_path / "backbone.pth"), "network": "r50"}}
    config_file.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", "all")
    assert result.returncode == 0, result.stdout
    counts = job_counts(result.stdout)
    assert counts["ijb_eval"] == 3 * 2 and counts["synth_synthetic"] == 1
    assert "--ijb-identities 100" in result.stdout
    for run in ("demo_softmax", "demo_cosface", "zoo_r50"):
        assert f"faceflow exported-model results/runs/{run}/export" in result.stdout
        for target in ("IJBC", "IJBB"):
            assert f"results/runs/{run}/ijb/{target}.json" in result.stdout
    assert "faceflow ijb \"$model\" resources/datasets/synthetic/ijb --target IJBC" in result.stdout
    config["ijb"]["targets"] = []
    config_file.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "all")
    assert result.returncode == 0, result.stdout
    assert "ijb_eval" not in job_counts(result.stdout) and "ijb/IJBC.json" not in result.stdout
    assert "--ijb-identities 100" in result.stdout  # synth's command (and data) do not follow the IJB settings


def test_ijb_path_reaches_the_shell_literally(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    folder = str(tmp_path / f"my ijb 'q' $(touch {marker})")
    workdir = copy_workflow(tmp_path / "wf")
    config_file = workdir / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["ijb"] = {"targets": ["IJBB"], "path": folder}
    config_file.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "-p", "results/runs/demo_softmax/ijb/IJBB.json")
    assert result.returncode == 0, result.stdout
    line = next(line for line in result.stdout.splitlines() if " faceflow ijb " in line)
    words = shlex.split(line.split(" faceflow ijb ", 1)[1])
    assert words[:4] == ["$model", folder, "--target", "IJBB"] and not marker.exists()
    inputs = re.search(r"rule ijb_eval:\n    input: (.*)\n", result.stdout).group(1)
    assert inputs == "results/runs/demo_softmax/export/export.json"  # the synthetic ijb/ is not read


@pytest.mark.slow
def test_ijb_job_on_the_exported_model_reaches_the_report_and_reruns_alone(tmp_path: Path) -> None:
    workdir = tiny_run_workflow(tmp_path / "wf", steps=2, checkpoint_every=2, ijb={"targets": ["IJBC"]})
    result = snakemake(workdir, "--cores", "2", "all")
    assert result.returncode == 0, result.stdout[-4000:]
    assert job_counts(result.stdout)["ijb_eval"] == 1
    record = json.loads((workdir / "results" / "runs" / "tiny" / "ijb" / "IJBC.json").read_text())
    assert record["target"] == "IJBC" and record["model"]["path"] == "results/runs/tiny/export/model.onnx"
    assert record["templates"] == 4 * 3 and record["pairs"] == 12 * 11 // 2
    report = workdir / "results" / "report"
    markdown = (report / "report.md").read_text()
    assert "## IJB 1:1 verification (TAR %)" in markdown
    assert f"| tiny | IJBC | {100 * record['tar_at_far']['1e-6']:.2f}" in markdown
    assert "IJB ROC" in (report / "report.html").read_text()

    config_file = workdir / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["ijb"]["batch_size"] = 7
    config_file.write_text(yaml.safe_dump(config))
    changed = snakemake(workdir, "--list-params-changes")
    assert changed.returncode == 0, changed.stdout
    paths = [line for line in changed.stdout.splitlines() if line.startswith("results/")]
    assert paths == ["results/runs/tiny/ijb/IJBC.json"], changed.stdout
    dry = snakemake(workdir, "-n", "all")
    assert dry.returncode == 0, dry.stdout
    assert job_counts(dry.stdout) == {"ijb_eval": 1, "make_report": 1, "all": 1}
    config["ijb"]["targets"] = ["IJBC", "IJBB"]  # a new target: its job and the report, the synth set is there
    config_file.write_text(yaml.safe_dump(config))
    dry = snakemake(workdir, "-n", "all")
    assert dry.returncode == 0, dry.stdout
    assert job_counts(dry.stdout) == {"ijb_eval": 2, "make_report": 1, "all": 1}
    config["ijb"]["targets"] = []  # a dropped target: the report reruns and leaves out its older result
    config_file.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "2", "all")
    assert result.returncode == 0, result.stdout[-4000:]
    assert job_counts(result.stdout) == {"make_report": 1, "all": 1}
    assert (workdir / "results" / "runs" / "tiny" / "ijb" / "IJBC.json").is_file()
    assert "IJB" not in (report / "report.md").read_text()
