"""TensorBoard event files of a run (tensorboardX), so that `tensorboard --logdir results/runs` shows every run.

    results/runs/{run}/tensorboard/              training: train/loss, train/lr, train/samples_per_sec and the
                                                 in-training validation accuracy/{bench}, xnorm/{bench}
    results/runs/{run}/tensorboard/checkpoints/  the workflow's per-checkpoint validation (same tags), written
                                                 by `faceflow report --tensorboard` from validation/step_N/*.json

The JSON logs (metrics.jsonl, validation.jsonl, the validation results) are the source of truth: each
writer replays them into fresh event files, so a resumed run's events end at its checkpoint like its
metrics.jsonl does, and rewriting the checkpoint events never duplicates a point. Nothing here loads OneFlow.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

from faceflow.data.atomic import atomic_dir

EVENTS_DIR = "tensorboard"
CHECKPOINT_EVENTS_DIR = "checkpoints"
EVENT_FILE_PREFIX = "events.out.tfevents."
# metrics.jsonl key -> scalar tag
TRAINING_TAGS = {"loss": "train/loss", "lr": "train/lr", "samples_per_sec": "train/samples_per_sec"}


def validation_scalars(benchmark: str, accuracy: float, xnorm: float) -> list[tuple[str, float]]:
    """(tag, value) pairs of one benchmark's validation: `accuracy/{bench}` (0..1) and `xnorm/{bench}`."""
    return [(f"accuracy/{benchmark}", float(accuracy)), (f"xnorm/{benchmark}", float(xnorm))]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def record_scalars(record: dict[str, Any]) -> list[tuple[str, float]]:
    """The scalars of one metrics.jsonl or validation.jsonl record (non-finite values are left out)."""
    if "benchmark" in record:
        pairs = validation_scalars(str(record["benchmark"]), record.get("accuracy", math.nan),
                                   record.get("xnorm", math.nan))
    else:
        pairs = [(tag, record[key]) for key, tag in TRAINING_TAGS.items() if key in record]
    return [(tag, float(value)) for tag, value in pairs if _finite(value)]


class EventWriter:
    """One tensorboardX SummaryWriter on `logdir`, flushed after every record (a killed run keeps its events)."""

    def __init__(self, logdir: str | os.PathLike) -> None:
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(logdir=str(self.logdir))

    def add(self, record: dict[str, Any]) -> None:
        """Write the scalars of a log record at its step (and wall time, when it has one)."""
        walltime = record.get("time")
        walltime = float(walltime) if _finite(walltime) else None
        for tag, value in record_scalars(record):
            self.writer.add_scalar(tag, value, global_step=int(record["step"]), walltime=walltime)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def remove_event_files(logdir: str | os.PathLike) -> None:
    """Delete the event files directly inside `logdir` (not those of its subdirectories)."""
    folder = Path(logdir)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and path.name.startswith(EVENT_FILE_PREFIX):
                path.unlink()


def start_training_events(run_dir: str | os.PathLike, records: Iterable[dict[str, Any]]) -> EventWriter:
    """A fresh writer on RUN/tensorboard (older event files there deleted) already holding `records` (the
    run's kept log records)."""
    logdir = Path(run_dir) / EVENTS_DIR
    remove_event_files(logdir)
    events = EventWriter(logdir)
    for record in records:
        events.add(record)
    return events


def write_checkpoint_events(run_dir: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Replace RUN/tensorboard/checkpoints with the events of per-checkpoint validation `records`
    ({step, benchmark, accuracy, xnorm}); returns the directory."""
    final = Path(run_dir) / EVENTS_DIR / CHECKPOINT_EVENTS_DIR
    with atomic_dir(final) as tmp:
        events = EventWriter(tmp)
        for record in sorted(records, key=lambda r: int(r["step"])):
            events.add(record)
        events.close()
    return final
