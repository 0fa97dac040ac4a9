"""The OneFlow port's ready-made OFRecord layouts, written here as its tools write them, read by faceflow.

Validation (`bin_2_ofrecord.py`): one file `part-0`, per image `encoded` (the JPEG bytes; for cfp_fp and
agedb_30 they come from numpy arrays' `.tobytes()`) and `issame` (int32, the pair flag on both images), no
side files. Training (`mx_recordio_2_ofrecord_shuffled_npart.py`): parts `part-00000 ...` of contiguous key
ranges (its shuffle shuffles a copy, so key order), `(N + P) // P` records per part (the last may be short or
empty), `label` (int32) then `encoded`, framed with `struct.pack("q", ByteSize())`, no side files.
"""
from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from data_layer_samples import jpeg, make_dataset
from faceflow.data import ofrecord_proto
from faceflow.data.recordio import RecordDataset
from faceflow.data.train_parts import verify_train_parts
from faceflow.data.verification_bin import read_bin, write_bin
from faceflow.eval.benchmarks import read_encoded
from faceflow.errors import DataFormatError
from faceflow.train.config import DEFAULTS, resolve_dataset, validate_config
from train_support import REPO, TINY, run_faceflow, write_config


def _framed(record) -> bytes:
    return struct.pack("q", record.ByteSize()) + record.SerializeToString()


def write_port_validation(out_dir, bins, issame_list) -> None:
    """bin_2_ofrecord.py's layout from a .bin's (bins, issame_list); bins may be bytes or uint8 numpy arrays."""
    out_dir.mkdir(parents=True)
    with open(out_dir / "part-0", "wb") as f:
        for i, image in enumerate(bins):
            record = ofrecord_proto.OFRecord()
            record.feature["encoded"].bytes_list.value.append(image.tobytes() if isinstance(image, np.ndarray)
                                                             else image)
            record.feature["issame"].int32_list.value.append(int(issame_list[i // 2]))
            f.write(_framed(record))


def write_port_train(rec_dir, out_dir, num_part: int) -> int:
    """mx_recordio_2_ofrecord_shuffled_npart.py's layout from an InsightFace-layout .rec; returns the image count."""
    out_dir.mkdir(parents=True)
    with RecordDataset(rec_dir) as dataset:
        keys = list(dataset.image_keys)  # key order: the tool shuffles a copy of this list
        per_part = (len(keys) + num_part) // num_part
        for part in range(num_part):
            with open(out_dir / f"part-{part:0>5d}", "wb") as f:
                for key in keys[part * per_part:min((part + 1) * per_part, len(keys))]:
                    header, image = dataset.read(key)
                    label = header.label if np.isscalar(header.label) else header.label[0]
                    record = ofrecord_proto.OFRecord()
                    record.feature["label"].int32_list.value.append(int(label))
                    record.feature["encoded"].bytes_list.value.append(image)
                    f.write(_framed(record))
    return len(keys)


def _pairs(n: int) -> tuple[list[bytes], list[bool]]:
    """n pairs of 112x112 JPEGs: even pairs two copies of one image, odd pairs two different ones."""
    images, issame = [], []
    for i in range(n):
        a = jpeg(2 * i, 112)
        images += [a, a if i % 2 == 0 else jpeg(2 * i + 1, 112)]
        issame.append(i % 2 == 0)
    return images, issame


def test_validation_part0_reads_like_the_bin(tmp_path):
    images, issame = _pairs(6)
    write_bin(tmp_path / "lfw.bin", images, issame)
    write_port_validation(tmp_path / "lfw", images, issame)
    write_port_validation(tmp_path / "cfp_fp", [np.frombuffer(im, np.uint8) for im in images], issame)
    assert sorted(p.name for p in (tmp_path / "lfw").iterdir()) == ["part-0"]
    bin_images, bin_flags = read_bin(tmp_path / "lfw.bin")
    for name in ("lfw", "cfp_fp"):
        got_images, got_flags = read_encoded(tmp_path / name)
        assert got_images == bin_images and got_flags.tolist() == bin_flags.tolist(), name


def test_training_refuses_part0_with_a_hint(tmp_path):
    images, issame = _pairs(2)
    write_port_validation(tmp_path / "lfw", images, issame)
    with pytest.raises(DataFormatError, match=r"no OFRecord parts named part-00000, part-00001, \.\.\. "
                                              r"\(found part-0, the OneFlow port's validation layout\)"):
        verify_train_parts(tmp_path / "lfw")


@pytest.fixture(scope="module")
def port_train(tmp_path_factory):
    """9 images of 3 identities written as 4 parts of 3, 3, 3 and 0 records (the port's split), no meta.json."""
    root = tmp_path_factory.mktemp("port")
    make_dataset(root / "rec", [i // 3 for i in range(9)], 3, size=112)
    count = write_port_train(root / "rec", root / "train", 4)
    return root / "train", count


def test_training_parts_without_meta_are_sized_by_the_check(port_train):
    train, count = port_train
    assert sorted(p.name for p in train.iterdir()) == [f"part-0000{i}" for i in range(4)]
    assert (train / "part-00003").stat().st_size == 0
    data = verify_train_parts(train)
    assert (data.counts(), data.image_size, data.skipped) == ((3, count), (112, 112), [])
    assert data.left_out == [train / "part-00003"], "OneFlow's reader aborts on the empty part: left out"
    config = validate_config({**DEFAULTS, **TINY, "num_classes": None, "train_data": str(train), "epochs": 2,
                              "max_steps": None})
    resolved = resolve_dataset(config, data.counts())
    assert (resolved["num_classes"], resolved["num_images"]) == (3, 9)
    given = resolve_dataset({**config, "num_classes": 5, "num_images": 20}, data.counts())
    assert (given["num_classes"], given["num_images"]) == (5, 20), "given counts win"


@pytest.mark.slow
def test_train_and_validate_on_the_port_layouts(port_train, tmp_path):
    train, _ = port_train
    images, issame = _pairs(10)  # the protocol's 10 folds need 10 pairs
    write_port_validation(tmp_path / "lfw", images, issame)
    write_bin(tmp_path / "lfw.bin", images, issame)
    config = write_config(tmp_path / "tiny.yaml", train_data=str(train), num_classes=None, max_steps=2,
                          checkpoint_every=2)
    proc = run_faceflow(["train", str(config), "--out", str(tmp_path / "run")], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "step_000002"
    assert checkpoint.is_dir()
    proc = subprocess.run([sys.executable, "-m", "faceflow.cli.main", "validate", str(checkpoint),
                           "--bench", f"port={tmp_path / 'lfw'}", "--bench", f"bin={tmp_path / 'lfw.bin'}",
                           "--batch-size", "8"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = {line.split("]")[0][1:]: line.split(": ")[1] for line in proc.stdout.splitlines()
                if "Accuracy-Flip" in line}
    assert set(accuracy) == {"port", "bin"} and accuracy["port"] == accuracy["bin"]
