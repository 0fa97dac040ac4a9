"""Training log output: the InsightFace-style console lines, OUT/train.log, OUT/metrics.jsonl
(one object per speed line), OUT/validation.jsonl (one per benchmark per validation) and, unless the
config's `tensorboard` is false, their TensorBoard events in OUT/tensorboard (`faceflow.train.tensorboard`).

Only rank 0 writes. On resume, metrics.jsonl entries newer than the checkpoint are dropped so the
file describes one consistent run; each metrics entry's `elapsed` counts the wall seconds of the
run since its trainer started, earlier segments included.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from faceflow.data.atomic import atomic_file
from faceflow.train.tensorboard import EventWriter, start_training_events


def speed_line(samples_per_sec: float, loss: float, lr: float, epoch: int, step: int, hours_left: float) -> str:
    """`Speed ... samples/sec  Loss ...  LearningRate ...  Epoch: ...  Global Step: ...  Required: ... hours`."""
    return (f"Speed {samples_per_sec:.2f} samples/sec  Loss {loss:.4f}  LearningRate {lr:.6f}  "
            f"Epoch: {epoch}  Global Step: {step}  Required: {hours_left:1.0f} hours")


def validation_lines(bench: str, step: int, xnorm: float, accuracy: float, std: float, highest: float) -> list[str]:
    """`[lfw][12000]XNorm: 22.41`, `[lfw][12000]Accuracy-Flip: 0.99717+-0.00280`, `...Accuracy-Highest: ...`."""
    return [f"[{bench}][{step}]XNorm: {xnorm:.2f}",
            f"[{bench}][{step}]Accuracy-Flip: {accuracy:.5f}+-{std:.5f}",
            f"[{bench}][{step}]Accuracy-Highest: {highest:.5f}"]


def jsonl_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects with a step of a .jsonl log (unreadable lines, e.g. one cut short by a kill, skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


class TrainLog:
    """Writes messages to stdout + OUT/train.log and records to OUT/metrics.jsonl (rank 0 only)."""

    def __init__(self, out_dir: str | os.PathLike, is_writer: bool, tensorboard: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.is_writer = is_writer
        self.tensorboard = tensorboard
        self.log_path = self.out_dir / "train.log"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.validation_path = self.out_dir / "validation.jsonl"
        self.started = time.time()
        self.elapsed_before = 0.0  # wall seconds of the earlier segments of a resumed run
        self.events: EventWriter | None = None

    def start(self, step: int) -> None:
        """Begin the segment that trains from `step`: drop later records, carry the run's elapsed time on,
        and (with tensorboard) rewrite the event files from the kept records."""
        self.truncate_after(step)
        if not self.is_writer:
            return
        kept = jsonl_records(self.metrics_path)
        self.elapsed_before = float(kept[-1].get("elapsed", 0.0)) if kept else 0.0
        if self.tensorboard:
            self.events = start_training_events(self.out_dir, kept + jsonl_records(self.validation_path))

    def close(self) -> None:
        """Close the event file (records are flushed as they are written)."""
        if self.events is not None:
            self.events.close()
            self.events = None

    def elapsed(self) -> float:
        """Wall seconds of the run so far, earlier segments included."""
        return self.elapsed_before + time.time() - self.started

    def truncate_after(self, step: int) -> None:
        """Drop metrics/validation records with step > `step` (left by a run killed after its last checkpoint)."""
        if not self.is_writer:
            return
        for path in (self.metrics_path, self.validation_path):
            if not path.is_file():
                continue
            kept = [record for record in jsonl_records(path) if int(record["step"]) <= step]
            with atomic_file(path) as tmp:
                tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))

    def message(self, text: str) -> None:
        """Print one line and append it (time-stamped) to train.log."""
        if not self.is_writer:
            return
        print(text, flush=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_path, "a") as handle:
            handle.write(f"{stamp} {text}\n")

    def error(self, text: str) -> None:
        """Like message, but to stderr (training stopped)."""
        if not self.is_writer:
            return
        print(text, file=sys.stderr, flush=True)
        with open(self.log_path, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def record(self, entry: dict[str, Any], file_name: str = "metrics.jsonl") -> None:
        """Append one JSON object to OUT/file_name (non-finite floats written as strings) and to the events."""
        if not self.is_writer:
            return
        if file_name == self.metrics_path.name:
            entry = {**entry, "elapsed": round(self.elapsed(), 3)}
        clean = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in entry.items()}
        with open(self.out_dir / file_name, "a") as handle:
            handle.write(json.dumps(clean) + "\n")
        if self.events is not None:
            self.events.add(entry)


class SpeedMeter:
    """Samples/s over all ranks and mean loss since the last log line."""

    def __init__(self, global_batch: int) -> None:
        self.global_batch = global_batch
        self.reset()

    def reset(self) -> None:
        """Start a new logging interval."""
        self.start = time.time()
        self.steps = 0
        self.loss_sum = 0.0

    def update(self, loss: float) -> None:
        """Account one optimizer step with its loss."""
        self.steps += 1
        self.loss_sum += loss

    def read(self) -> tuple[float, float, float]:
        """(samples/s, mean loss, seconds per step) of the interval."""
        elapsed = max(time.time() - self.start, 1e-9)
        steps = max(self.steps, 1)
        return self.global_batch * self.steps / elapsed, self.loss_sum / steps, elapsed / steps
