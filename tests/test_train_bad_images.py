"""An OFRecord part written by hand with images OneFlow's decoder cannot read: OneFlow's own pipeline dies on it
(shown in a subprocess), `faceflow train` stops with one line naming the part and record (bad_images: fail)
or trains without those records and counts them in the train log (bad_images: skip); never exit 134."""
from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from data_layer_samples import jpeg, unreadable_jpegs
from faceflow.data.ofrecord import part_name, serialize_train_record
from faceflow.data.train_parts import verify_train_parts
from train_support import REPO, run_faceflow, write_config

# OneFlow's training pipeline (as faceflow builds it) over every record of DIR, in file order.
DECODE = """
import sys
from faceflow.data.pipeline import TrainPipeline
pipeline = TrainPipeline(sys.argv[1], 2, shuffle=False, mirror=False, num_threads=1)
for _ in range(int(sys.argv[2])):
    images, labels = pipeline()
    images.numpy()
print("decoded every record")
"""
KILLERS = ("corrupt_body", "garbage", "cmyk", "png", "small")  # each ends OneFlow's process on its own


def _write_part(path, images):
    """One part written record by record with protobuf, labels 0, 1, 2, ... (mod 6)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for i, image in enumerate(images):
            serialized = serialize_train_record(image, i % 6)
            f.write(struct.pack("q", len(serialized)) + serialized)


def _oneflow_decode(data_dir, records):
    return subprocess.run([sys.executable, "-c", DECODE, str(data_dir), str(-(-records // 2))], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def bad_part(tmp_path_factory):
    """A 112x112 training folder of one part: good images and, at records 1, 3, 5, 6, 7, unreadable ones."""
    bad = unreadable_jpegs(112)
    images = [jpeg(0, 112), bad["corrupt_body"], jpeg(1, 112), bad["garbage"], jpeg(2, 112), bad["truncated"],
              bad["cmyk"], bad["small"], jpeg(3, 112), jpeg(4, 112)]
    data = tmp_path_factory.mktemp("bad") / "train"
    _write_part(data / part_name(0), images)
    return data


def test_oneflow_dies_on_the_raw_part_and_names_no_record(bad_part):
    proc = _oneflow_decode(bad_part, 10)
    assert proc.returncode != 0 and "decoded every record" not in proc.stdout
    assert "Unsupported marker type 0x13" in proc.stderr  # libjpeg's own exit, the message of the issue
    assert part_name(0) not in proc.stderr and "record" not in proc.stderr.lower()


def test_train_fails_with_one_line_naming_part_and_record(bad_part, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", train_data=str(bad_part), max_steps=2, checkpoint_every=2)
    proc = run_faceflow(["train", str(config), "--out", str(tmp_path / "run")])
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"faceflow train: error: {bad_part / part_name(0)}: record 1 (byte offset ")
    assert "(4 more bad record(s)); set bad_images: skip to train without such records" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_skips_and_counts_the_bad_records(bad_part, tmp_path):
    before = sorted(p.name for p in bad_part.iterdir())
    config = write_config(tmp_path / "tiny.yaml", train_data=str(bad_part), max_steps=2, checkpoint_every=2,
                          bad_images="skip")
    proc = run_faceflow(["train", str(config), "--out", str(tmp_path / "run")], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert ("bad_images: skip: 5 unreadable training record(s) skipped in 1 of 1 parts of "
            f"{bad_part} (part-00000 record 1: corrupt JPEG header") in log
    assert (tmp_path / "run" / "checkpoints" / "step_000002").is_dir()
    assert sorted(p.name for p in bad_part.iterdir()) == before, "the data folder is left as it was"
    view = verify_train_parts(bad_part, "skip").read_dir
    assert _oneflow_decode(view, 5).returncode == 0, "OneFlow reads the cleaned copy"


@pytest.mark.slow
@pytest.mark.parametrize("kind", KILLERS)
def test_each_kind_kills_oneflow_and_is_caught(tmp_path, kind):
    data = tmp_path / "train"
    _write_part(data / part_name(0), [jpeg(0, 112), unreadable_jpegs(112)[kind], jpeg(1, 112), jpeg(2, 112)])
    proc = _oneflow_decode(data, 4)
    assert proc.returncode != 0 and "decoded every record" not in proc.stdout, kind
    [(path, bad)] = verify_train_parts(data, "skip").skipped
    assert (path.name, bad.index) == (part_name(0), 1)
