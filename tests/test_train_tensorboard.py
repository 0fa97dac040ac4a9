"""TensorBoard events (tensorboardX), read back by TensorBoard itself: training writes loss, lr, samples/s and the
in-training validation under RUN/tensorboard (rank 0 only, off by `tensorboard: false`), a resumed run's
events end at its checkpoint like its metrics.jsonl, and `faceflow report --tensorboard` adds the workflow's
per-checkpoint validation, so that `tensorboard --logdir results/runs` shows both."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from report_samples import ACCURACY, write_results
from tensorboard_tool import read_scalars, served_scalars
from train_support import free_port, step_batches, tiny_config, write_random_bin

from faceflow.checkpoint import list_checkpoints
from faceflow.cli.main import main as faceflow_main
from faceflow.train.engine import Trainer
from faceflow.train.metrics import TrainLog, jsonl_records
from faceflow.train.tensorboard import start_training_events


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _steps_and_values(events: list[list[float]]) -> tuple[list[int], np.ndarray]:
    return [int(step) for step, _, _ in events], np.array([value for _, value, _ in events])


def test_training_events_match_the_logs_and_a_resume_rewrites_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tiny_config(max_steps=4, validate_every=2, val_batch_size=20,
                         val_benchmarks={"lfw": str(write_random_bin(tmp_path / "lfw.bin"))})
    Trainer(config, out, batches=step_batches).run()
    for step, path in list_checkpoints(out / "checkpoints"):
        if step > 2:  # as if killed after the step-2 checkpoint
            shutil.rmtree(path)
    (out / "train.json").unlink()
    Trainer(config, out, batches=step_batches).run()

    metrics, validation = _jsonl(out / "metrics.jsonl"), _jsonl(out / "validation.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and [v["step"] for v in validation] == [2, 4]
    elapsed = [m["elapsed"] for m in metrics]
    assert all(b > a for a, b in zip(elapsed, elapsed[1:])), elapsed  # carried across the resume
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1, "the first segment's file is kept"
    runs = read_scalars(out / "tensorboard")
    assert list(runs) == ["."]
    scalars = runs["."]
    assert set(scalars) == {"train/loss", "train/lr", "train/samples_per_sec", "accuracy/lfw", "xnorm/lfw"}
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/samples_per_sec", "samples_per_sec")):
        steps, values = _steps_and_values(scalars[tag])
        assert steps == [1, 2, 3, 4], (tag, steps)  # each step once: the killed segment's events are gone
        np.testing.assert_allclose(values, [m[key] for m in metrics], rtol=1e-6)
    for tag, key in (("accuracy/lfw", "accuracy"), ("xnorm/lfw", "xnorm")):
        steps, values = _steps_and_values(scalars[tag])
        assert steps == [2, 4]
        np.testing.assert_allclose(values, [v[key] for v in validation], rtol=1e-6)
    np.testing.assert_allclose([wall for _, _, wall in scalars["train/loss"]], [m["time"] for m in metrics])


def test_events_only_on_rank_zero_and_off_by_config(tmp_path: Path) -> None:
    assert Trainer(tiny_config(), tmp_path / "on", batches=step_batches).log.tensorboard is True
    assert Trainer(tiny_config(tensorboard=False), tmp_path / "off", batches=step_batches).log.tensorboard is False
    for name, writer, tensorboard in (("other_rank", False, True), ("off", True, False)):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        log = TrainLog(folder, writer, tensorboard=tensorboard)
        log.start(0)
        log.record({"step": 1, "loss": 2.0, "lr": 0.1, "samples_per_sec": 9.0, "time": 1.0})
        log.close()
        assert not (folder / "tensorboard").exists(), name
    assert not (tmp_path / "other_rank" / "metrics.jsonl").exists()


def test_report_writes_checkpoint_validation_that_tensorboard_serves(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results")
    r50 = results / "runs" / "r50_arcface"
    start_training_events(r50, jsonl_records(r50 / "metrics.jsonl")).close()  # what training wrote
    for _ in range(2):  # a rerun replaces the checkpoint events instead of adding to them
        assert faceflow_main(["report", str(results), "--out", str(results / "report"), "--tensorboard"]) == 0
    runs = read_scalars(results / "runs")
    assert set(runs) == {"r50_arcface/tensorboard", "r50_arcface/tensorboard/checkpoints",
                         "zoo_r100/tensorboard/checkpoints"}  # mbf_cosface_pfc has tensorboard: false
    checkpoints = runs["r50_arcface/tensorboard/checkpoints"]
    assert set(checkpoints) == {f"{kind}/{bench}" for kind in ("accuracy", "xnorm")
                                for bench in ("lfw", "cfp_fp", "agedb_30")}
    steps, values = _steps_and_values(checkpoints["accuracy/cfp_fp"])
    assert steps == [10, 20, 30]
    np.testing.assert_allclose(values, [ACCURACY["r50_arcface"][s]["cfp_fp"] for s in steps], rtol=1e-6)
    np.testing.assert_allclose(_steps_and_values(checkpoints["xnorm/lfw"])[1], [30.5, 40.5, 50.5], rtol=1e-6)
    assert _steps_and_values(runs["zoo_r100/tensorboard/checkpoints"]["accuracy/lfw"])[0] == [0]

    training, checkpoints = ("r50_arcface/tensorboard", "train/loss"), ("r50_arcface/tensorboard/checkpoints",
                                                                        "accuracy/lfw")
    served = served_scalars(results / "runs", free_port(), [training, checkpoints])
    assert [int(step) for _, step, _ in served[training]] == list(range(1, 31))
    assert [(int(step), round(value, 4)) for _, step, value in served[checkpoints]] == [
        (10, 0.9), (20, 0.97), (30, 0.96)]


@pytest.mark.parametrize("value", ["yes", 1])
def test_tensorboard_key_takes_booleans_only(value) -> None:
    from faceflow.errors import ConfigError

    with pytest.raises(ConfigError, match="tensorboard: expected true or false"):
        tiny_config(tensorboard=value)
