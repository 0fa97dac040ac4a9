"""Benchmark: memory and time of `faceflow index` and `faceflow convert rec` at faces_emore's size.

Writes an InsightFace-layout RecordIO dataset with faces_emore's counts (5,822,653 images of 85,742
identities: 5.9M records) and a 1/20 one, both of one tiny decodable JPEG repeated with varying labels,
framed with numpy in bulk (about 1 GB on disk, removed at the end). Each command runs as its own
process; its peak RSS comes from `os.wait4`. Printed per command: peak RSS of both files, the marginal
peak per record ((big - small) / extra records, which cancels the interpreter and libraries) and the
marginal seconds per million records. Commands: `index` without train.idx (scan and write it), `index`
with a current one (check it), `convert rec --no-verify` (one part, framing and JPEG markers checked, as
before faceflow decoded images) and with --decoded `convert rec` (every image decoded).

    .venv/bin/python bench/scale.py [--images 5822653] [--classes 85742] [--baseline REV] [--decoded] [--repeats 1]

--baseline REV runs the same commands with the `faceflow` package of git revision REV too (exported with
`git archive`), alternating with this checkout's step by step, and prints the ratios this/REV last
(wall times follow the machine's load; CPU times, user + system of every thread, much less).
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

MAGIC = 0xCED7230A
FRAME = 8  # magic + length word
IR = 24  # IRHeader: flag u32, label f32, id u64, id2 u64
REPO = Path(__file__).resolve().parents[1]


def tiny_jpeg() -> bytes:
    """A decodable 8x8 grey baseline JPEG without its JFIF segment (141 bytes)."""
    out = io.BytesIO()
    Image.new("L", (8, 8), 128).save(out, "JPEG", quality=75, optimize=True)
    data = out.getvalue()
    if data[2:4] == b"\xff\xe0":  # drop APP0: decoders do not need it
        data = data[:2] + data[4 + int.from_bytes(data[4:6], "big"):]
    return data


def _frame_rows(payload_width: int, rows: int) -> np.ndarray:
    """(rows, framed width) uint8 rows holding the frame header of a `payload_width`-byte payload."""
    width = FRAME + payload_width + (-payload_width % 4)
    block = np.zeros((rows, width), np.uint8)
    block[:, :8] = np.frombuffer(np.array([MAGIC, payload_width], "<u4").tobytes(), np.uint8)
    return block


def _label_rows(keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Header/identity records (flag 2, label [start, end)) under `keys`, framed."""
    block = _frame_rows(IR + 8, len(keys))
    block[:, 8:12] = np.frombuffer(np.uint32(2).tobytes(), np.uint8)
    block[:, 16:24] = keys.astype("<u8")[:, None].view(np.uint8)
    block[:, 32:40] = bounds.astype("<f4").view(np.uint8).reshape(len(keys), 8)
    return block


def write_dataset(out: Path, images: int, classes: int, block: int = 1 << 20) -> int:
    """train.rec + property of `images` tiny JPEGs (labels i * classes // images) in InsightFace layout,
    written in blocks of `block` records; returns the record count (header and identities included)."""
    jpeg = tiny_jpeg()
    out.mkdir(parents=True)
    first, end = images + 1, images + 1 + classes
    labels = np.arange(images, dtype=np.int64) * classes // images
    starts = np.searchsorted(labels, np.arange(classes)) + 1
    ranges = np.stack([starts, np.append(starts[1:], first)], 1)
    template = _frame_rows(IR + len(jpeg), 1)
    template[0, 8 + IR:8 + IR + len(jpeg)] = np.frombuffer(jpeg, np.uint8)
    if (template[0, 8:].view("<u4") == MAGIC).any():
        raise SystemExit("the tiny JPEG holds an aligned RecordIO magic word: it would need escaping")
    with open(out / "train.rec", "wb") as rec:
        rec.write(_label_rows(np.array([0]), np.array([[first, end]])).tobytes())
        for lo in range(0, images, block):
            hi = min(lo + block, images)
            rows = np.repeat(template, hi - lo, axis=0)
            rows[:, 12:16] = labels[lo:hi].astype("<f4")[:, None].view(np.uint8)
            rows[:, 16:24] = np.arange(lo + 1, hi + 1, dtype="<u8")[:, None].view(np.uint8)
            rec.write(rows.tobytes())
        rec.write(_label_rows(np.arange(first, end), ranges).tobytes())
    (out / "property").write_text(f"{classes},8,8\n")
    return end


def write_in_child(out: Path, images: int, classes: int) -> int:
    """`write_dataset` in a child process: a child's peak RSS counts its parent's at fork time, so the
    parent that measures the commands never holds the data blocks itself."""
    done = subprocess.run([sys.executable, __file__, "--write", str(out), "--images", str(images),
                           "--classes", str(classes)], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1])


class Run(NamedTuple):
    """One command's wall seconds, CPU seconds (user + system, every thread) and peak RSS bytes."""

    wall: float
    cpu: float
    peak: int


def run(command: list[str], code: Path) -> Run:
    """Wall time, CPU time and peak RSS of `python -m faceflow.cli.main COMMAND` with `code` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(code))
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "faceflow.cli.main", *command], env=env, cwd=code,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # -m puts the cwd first on the path
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"faceflow {' '.join(command)} failed ({child.returncode}):\n{stderr.decode()[-2000:]}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


STEPS = {  # "convert rec" checks framing and JPEG markers only, as faceflow did before it decoded images
    "index (rebuild)": lambda data, out: ["index", str(data)],
    "index (check)": lambda data, out: ["index", str(data)],
    "convert rec": lambda data, out: ["convert", "rec", str(data), str(out), "--quiet", "--no-verify"],
    "convert rec, decoded": lambda data, out: ["convert", "rec", str(data), str(out), "--quiet"],
}


def decodes_images(code: Path) -> bool:
    """True when the package at `code` decodes images in `convert rec` (and so knows --no-verify)."""
    return "--no-verify" in (code / "faceflow" / "cli" / "convert.py").read_text()


def steps_of(code: Path, decoded: bool) -> list[str]:
    """The steps to run with the package at `code` (an older one neither decodes nor knows --no-verify)."""
    return [step for step in STEPS if step != "convert rec, decoded" or (decoded and decodes_images(code))]


def measure(step: str, data: Path, work: Path, code: Path) -> Run:
    """One step on dataset `data`, run with the package at `code` (its output removed afterwards)."""
    if step == "index (rebuild)":
        (data / "train.idx").unlink(missing_ok=True)
    command = STEPS[step](data, work / "of")
    if not decodes_images(code):
        command = [arg for arg in command if arg != "--no-verify"]
    result = run(command, code)
    shutil.rmtree(work / "of", ignore_errors=True)
    return result


def export_revision(rev: str, into: Path) -> Path:
    """The `faceflow` package of git revision `rev`, unpacked under `into`."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "faceflow"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5_822_653, help="image records (faces_emore: 5,822,653)")
    parser.add_argument("--classes", type=int, default=85_742, help="identities (faces_emore: 85,742)")
    parser.add_argument("--small", type=int, default=20, help="the small dataset is 1/SMALL of the big one")
    parser.add_argument("--baseline", metavar="REV", help="also measure the faceflow package of this git revision")
    parser.add_argument("--repeats", type=int, default=1, help="runs per step and code version (best time kept)")
    parser.add_argument("--decoded", action="store_true",
                        help="also measure `convert rec` decoding every image (several minutes more)")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # internal: write one dataset, print its count
    args = parser.parse_args()
    if args.write:
        print(write_dataset(args.write, args.images, args.classes))
        return
    with tempfile.TemporaryDirectory(prefix="faceflow-scale-") as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        counts = {"big": write_in_child(work / "big", args.images, args.classes),
                  "small": write_in_child(work / "small", args.images // args.small, args.classes // args.small)}
        size = (work / "big" / "train.rec").stat().st_size
        print(f"data: {counts['big']} records ({size / 1e9:.2f} GB train.rec) and {counts['small']} records, "
              f"{time.perf_counter() - began:.1f} s to write; load average {os.getloadavg()[0]:.2f}")
        codes = {"this": REPO}
        if args.baseline:
            codes[args.baseline] = export_revision(args.baseline, work / "baseline")
        found: dict[str, dict[str, dict[str, list[Run]]]] = {
            name: {which: {step: [] for step in steps_of(code, args.decoded)} for which in counts} for name, code in codes.items()}
        turn = 0
        for _ in range(args.repeats):
            for which in counts:
                for step in STEPS:  # the code versions alternate step by step, the first one swapped each time
                    turn += 1
                    for name in list(codes)[::(-1) ** turn]:
                        if step in found[name][which]:
                            found[name][which][step].append(measure(step, work / which, work, codes[name]))
        load = os.getloadavg()[0]
    extra = counts["big"] - counts["small"]
    summary: dict[str, dict[str, Run]] = {}
    for name, sides in found.items():
        print(f"faceflow of {'this checkout' if name == 'this' else name}:")
        summary[name] = {}
        for step in sides["big"]:
            big, small = (Run(min(r.wall for r in sides[w][step]), min(r.cpu for r in sides[w][step]),
                              max(r.peak for r in sides[w][step])) for w in ("big", "small"))
            marginal = summary[name][step] = Run((big.wall - small.wall) / extra * 1e6,
                                                 (big.cpu - small.cpu) / extra * 1e6, (big.peak - small.peak) / extra)
            print(f"  {step:20s} peak RSS {big.peak / 1e6:7.1f} MB (small file {small.peak / 1e6:6.1f} MB): "
                  f"{marginal.peak:6.1f} bytes/record; per million records {marginal.wall:5.2f} s "
                  f"({marginal.cpu:5.2f} CPU s); big file {big.wall:.1f} s")
    print(f"load average {load:.2f} (wall times stretch with it; CPU times much less)")
    for step, marginal in summary["this"].items():
        speed_goal = " (goal <= 7.5)" if step == "convert rec" else ""
        print(f"{step}: {marginal.peak:.1f} bytes/record (goal <= 64), {marginal.wall:.2f} s per million records"
              f"{speed_goal}, {marginal.cpu:.2f} CPU s per million")
    if args.baseline:
        for step, base in summary[args.baseline].items():
            mine = summary["this"][step]
            print(f"ratio {step} this/{args.baseline}: memory per record {mine.peak / base.peak:.3f}, "
                  f"time per record {mine.wall / base.wall:.3f}, CPU time per record {mine.cpu / base.cpu:.3f}")


if __name__ == "__main__":
    main()
