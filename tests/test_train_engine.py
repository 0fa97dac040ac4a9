"""Training engine in-process: graph resume, checkpoint layout, finished runs, log/metrics files, validation."""
from __future__ import annotations

import json
import re
import shutil


import numpy as np
import pytest
from train_support import step_batches, tiny_config, write_random_bin

from faceflow.checkpoint import list_checkpoints, load_backbone, read_checkpoint_meta
from faceflow.train.engine import Trainer

LOG_LINE = (r"^Speed \d+\.\d\d samples/sec  Loss \d+\.\d{4}  LearningRate \d\.\d{6}  Epoch: \d+  "
            r"Global Step: \d+  Required: \d+ hours$")


def _train(tmp_path, name, **overrides):
    trainer = Trainer(tiny_config(**overrides), tmp_path / name, batches=step_batches)
    trainer.run()
    return trainer


def test_graph_run_resumes_from_its_checkpoint(tmp_path, capsys):
    _train(tmp_path, "split", graph=True, max_steps=3)
    out = tmp_path / "split"
    for step, path in list_checkpoints(out / "checkpoints"):
        if step > 2:
            shutil.rmtree(path)
    resumed = _train(tmp_path, "split", graph=True)
    assert f"resuming from {out / 'checkpoints' / 'step_000002'} (step 2 of 6)" in capsys.readouterr().out
    assert len(resumed.losses) == 4 and np.all(np.isfinite(resumed.losses))
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2, 4, 6]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_checkpoint_layout_and_finished_run_not_retrained(tmp_path, capsys):
    _train(tmp_path, "run")
    out = tmp_path / "run"
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2, 4, 6]
    final = out / "checkpoints" / "step_000006"
    assert {p.name for p in final.iterdir()} == {"backbone", "head", "optimizer", "state.json", "config.yaml"}
    config, state = read_checkpoint_meta(final)
    assert state["step"] == 6 and config["network"] == "mbf"
    model, _, step = load_backbone(final)
    assert step == 6 and not model.training
    lines = [line.split(" ", 2)[2] for line in (out / "train.log").read_text().splitlines()]
    speed_lines = [line for line in lines if line.startswith("Speed")]
    assert len(speed_lines) == 6
    assert all(re.match(LOG_LINE, line) for line in speed_lines), speed_lines
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert set(records[0]) >= {"step", "epoch", "loss", "lr", "samples_per_sec", "time"}
    capsys.readouterr()
    again = Trainer(tiny_config(), out, batches=step_batches)
    assert again.run() == 6 and again.losses == []
    assert "already finished" in capsys.readouterr().out


def test_validation_while_training_logs_xnorm_and_accuracy(tmp_path, capsys):
    bench = write_random_bin(tmp_path / "lfw.bin")
    _train(tmp_path, "val", max_steps=2, validate_every=2, val_benchmarks={"lfw": str(bench)}, val_batch_size=20)
    out = capsys.readouterr().out
    assert re.search(r"^\[lfw\]\[2\]XNorm: \d+\.\d\d$", out, re.M), out
    assert re.search(r"^\[lfw\]\[2\]Accuracy-Flip: \d\.\d{5}\+-\d\.\d{5}$", out, re.M), out
    records = [json.loads(line) for line in (tmp_path / "val" / "validation.jsonl").read_text().splitlines()]
    assert [(r["step"], r["benchmark"]) for r in records] == [(2, "lfw")] and 0.0 <= records[0]["accuracy"] <= 1.0


@pytest.mark.parametrize("momentum", ["exact", "reset"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_partial_fc_momentum_mode_follows_the_config(tmp_path, momentum, optimizer):
    trainer = _train(tmp_path, momentum, fc_mode="partial_fc", sample_rate=0.5, partial_fc_momentum=momentum,
                     optimizer=optimizer, max_steps=3)
    assert len(trainer.losses) == 3 and np.all(np.isfinite(trainer.losses))
    # exact keeps per-class tables of the optimizer state next to the class weights; reset has none (less memory)
    tables = {"sgd": {"weight_mom"}, "adamw": {"weight_exp_avg", "weight_exp_avg_sq"}}[optimizer]
    buffers = {name for name, _ in trainer.head.named_buffers() if name.startswith("weight_")}
    assert buffers == (tables if momentum == "exact" else set())


def test_adamw_resume_continues_the_uninterrupted_run_and_graph_agrees(tmp_path):
    """AdamW: 2 steps + resume + 4 steps gives the losses of 6 steps in one go (moments and step count are
    restored from the checkpoint); nn.Graph gives the same curve."""
    adamw = dict(optimizer="adamw", lr=0.003, weight_decay=0.05)
    whole = _train(tmp_path, "whole", **adamw)
    first = _train(tmp_path, "split", max_steps=2, **adamw)
    resumed = _train(tmp_path, "split", **adamw)
    assert len(whole.losses) == 6 and whole.losses[0] != whole.losses[-1]
    assert first.losses + resumed.losses == pytest.approx(whole.losses, rel=1e-5)
    graph = _train(tmp_path, "graph", graph=True, **adamw)
    assert graph.losses == pytest.approx(whole.losses, rel=1e-3)
