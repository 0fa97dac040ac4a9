"""Evaluate-only entries (`models:`): a published model goes through import, validation, export and the
report beside the trained runs, without training; the plan names bad entries by their key."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from faceflow.errors import ConfigError
from faceflow.workflow.config_check import validate_config
from faceflow.workflow.plan import build_plan
from workflow_helpers import REPO, copy_workflow, job_counts, snakemake, tiny_run_workflow

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _config(**models) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"] = models
    return config


def test_models_are_planned_beside_runs_and_bad_entries_name_their_key(tmp_path):
    (tmp_path / "zoo-symbol.json").write_text("{}")
    for epoch in (1, 12):
        (tmp_path / f"zoo-{epoch:04d}.params").write_bytes(b"")
    (tmp_path / "backbone.pth").write_bytes(b"")
    config = _config(ms1mv3_r50={"path": str(tmp_path / "backbone.pth"), "network": "r50"},
                     old_mxnet={"path": str(tmp_path / "zoo"), "network": "r100", "embedding_size": 512})
    plan = build_plan(validate_config(config, SCHEMA))
    assert plan.evaluated() == ["demo_softmax", "demo_cosface", "ms1mv3_r50", "old_mxnet"]
    assert plan.validation_steps("ms1mv3_r50") == ["000000"] and plan.dataset_of("old_mxnet") == "synthetic"
    assert plan.models["ms1mv3_r50"].import_argument_string("results/runs/ms1mv3_r50") == (
        f"torch {tmp_path / 'backbone.pth'} results/runs/ms1mv3_r50 --as-run --network r50")
    assert plan.models["old_mxnet"].import_argument_string("out").startswith(f"mxnet {tmp_path / 'zoo'} 12 out")
    assert plan.models["old_mxnet"].inputs() == [f"{tmp_path / 'zoo'}-symbol.json", f"{tmp_path / 'zoo'}-0012.params"]
    for models, message in [
        ({"demo_softmax": {"path": str(tmp_path / "backbone.pth"), "network": "r50"}}, "is also a run name"),
        ({"m": {"path": str(tmp_path / "missing.onnx"), "network": "r50"}}, r"models\.m\.path: .*missing\.onnx: no such"),
        ({"m": {"path": str(tmp_path / "backbone.pth"), "network": "r50", "format": "onnx"}},
         r"models\.m\.path: .* is a torch model, not onnx"),
        ({"m": {"path": str(tmp_path / "backbone.pth"), "network": "r50", "dataset": "nope"}},
         r"models\.m\.dataset: unknown dataset 'nope'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_plan(validate_config(_config(**models), SCHEMA))
    with pytest.raises(ConfigError, match=r"models\.m\.netwrk: unknown key"):
        validate_config(_config(m={"path": "x.pth", "network": "r50", "netwrk": 1}), SCHEMA)
    # network names and the embedding size's bounds come from the registry and the key table, in their words
    with pytest.raises(ConfigError, match=r"models\.m\.network: expected one of .*mbf.*, got 'r51'"):
        validate_config(_config(m={"path": "x.pth", "network": "r51"}), SCHEMA)
    with pytest.raises(ConfigError, match=r"models\.m\.embedding_size: expected an integer > 0, got 0"):
        validate_config(_config(m={"path": "x.pth", "network": "r50", "embedding_size": 0}), SCHEMA)
    with pytest.raises(ConfigError, match=r"models\.m\.format: 'faceflow' is not one of \['torch', 'onnx', 'mxnet'\]"):
        validate_config(_config(m={"path": "x.pth", "network": "r50", "format": "faceflow"}), SCHEMA)


def test_dry_run_imports_the_model_and_never_trains_it(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    model = tmp_path / "backbone.pth"
    model.write_bytes(b"")
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["models"] = {"zoo_r50": {"path": str(model), "network": "r50"}}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "all")
    assert result.returncode == 0, result.stdout
    counts = job_counts(result.stdout)
    assert counts["import_model"] == 1 and counts["train"] == 2 and counts["export_model"] == 3
    assert f"faceflow import torch {model} results/runs/zoo_r50 --as-run --network r50" in result.stdout
    assert "results/runs/zoo_r50/validation/step_000000/lfw.json" in result.stdout


@pytest.mark.slow
def test_published_model_gets_a_row_in_the_report_beside_a_trained_run(tmp_path, torch_reference):
    work, _ = torch_reference
    workdir = tiny_run_workflow(tmp_path / "wf", steps=2, checkpoint_every=2)
    shutil.copy(work / "mbf_tiny.pth", tmp_path / "backbone.pth")  # arcface_torch's mbf, blocks 1, scale 1
    config_file = workdir / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["models"] = {"zoo_mbf": {"path": str(tmp_path / "backbone.pth"), "network": "mbf"}}
    config_file.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "2", "report")  # the model's export is planned in the dry run above
    assert result.returncode == 0, result.stdout[-4000:]
    assert job_counts(result.stdout)["import_model"] == 1 and job_counts(result.stdout)["train"] == 1
    run_dir = workdir / "results" / "runs" / "zoo_mbf"
    assert (run_dir / "checkpoints" / "step_000000").is_dir() and (run_dir / "train.json").is_file()
    accuracy = pd.read_csv(workdir / "results" / "report" / "accuracy.csv")
    assert set(accuracy["run"]) == {"tiny", "zoo_mbf"}
    assert accuracy[accuracy["run"] == "zoo_mbf"]["step"].tolist() == [0]
    assert "zoo_mbf" in (workdir / "results" / "report" / "report.md").read_text()
    again = snakemake(workdir, "-n", "report")  # imported once, trained once: nothing left to do
    assert again.returncode == 0 and job_counts(again.stdout) == {}, again.stdout
