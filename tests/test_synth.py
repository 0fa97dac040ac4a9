"""The synthetic face dataset: determinism, InsightFace layout, verification sets, difficulty, nuisance."""
from __future__ import annotations

import io
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from faceflow.cli import main as cli_main
from faceflow.data import synth
from faceflow.data.synth_baseline import raw_pixel_baseline
from faceflow.data.verification_bin import read_bin, write_bin
from faceflow.errors import FaceflowError

SMALL = dict(num_classes=6, per_class=5, pairs=20)


def _decode(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    synth.generate_dataset(out, seed=3, **SMALL)
    return out


def test_same_seed_same_bytes_other_seed_differs(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    other = tmp_path / "other"
    synth.generate_dataset(again, seed=3, **SMALL)
    synth.generate_dataset(other, seed=4, **SMALL)
    assert sorted(p.name for p in small.iterdir()) == sorted(synth.OUTPUT_FILES)
    for name in synth.OUTPUT_FILES:
        assert (small / name).read_bytes() == (again / name).read_bytes(), name
    for name in ("train.rec", "lfw.bin", "cfp_fp.bin", "agedb_30.bin"):
        assert (small / name).read_bytes() != (other / name).read_bytes(), name


def test_insightface_layout_readable_by_mxnet(small: Path) -> None:
    assert (small / "property").read_text().strip() == f"{SMALL['num_classes']},112,112"
    rec = mx.recordio.MXIndexedRecordIO(str(small / "train.idx"), str(small / "train.rec"), "r")
    try:
        header, _ = mx.recordio.unpack(rec.read_idx(0))
        assert header.flag > 0
        first_identity, end = int(header.label[0]), int(header.label[1])
        n_images = SMALL["num_classes"] * SMALL["per_class"]
        assert first_identity == n_images + 1
        assert end == first_identity + SMALL["num_classes"]
        assert sorted(rec.keys) == list(range(end))
        for label in range(SMALL["num_classes"]):
            id_header, payload = mx.recordio.unpack(rec.read_idx(first_identity + label))
            start, stop = int(id_header.label[0]), int(id_header.label[1])
            assert payload == b"" and stop - start == SMALL["per_class"]
            for key in range(start, stop):
                img_header, image = mx.recordio.unpack(rec.read_idx(key))
                assert img_header.flag == 0 and int(img_header.label) == label
                assert _decode(image).shape == (112, 112, 3)
    finally:
        rec.close()


def test_verification_sets_balanced_and_disjoint_from_training(small: Path) -> None:
    seen: dict[str, set[int]] = {}
    for bench in synth.BENCHMARKS:
        images, issame = read_bin(small / f"{bench}.bin")
        assert len(images) == 2 * SMALL["pairs"] and len(issame) == SMALL["pairs"]
        assert int(issame.sum()) == SMALL["pairs"] // 2
        assert all(_decode(b).shape == (112, 112, 3) for b in images)
        ids, planned = synth.verification_pairs(bench, SMALL["num_classes"], SMALL["pairs"], seed=3)
        assert np.array_equal(planned, issame)
        assert np.array_equal(ids[:, 0] == ids[:, 1], issame)
        assert ids.min() >= SMALL["num_classes"]
        seen[bench] = set(ids.ravel().tolist())
    assert not seen["lfw"] & seen["cfp_fp"] and not seen["lfw"] & seen["agedb_30"] and not seen["cfp_fp"] & seen["agedb_30"]


def test_nuisance_varies_images_of_one_identity(small: Path) -> None:
    rec = mx.recordio.MXIndexedRecordIO(str(small / "train.idx"), str(small / "train.rec"), "r")
    try:
        keys = range(1, SMALL["per_class"] + 1)  # identity 0
        pixels = np.stack([_decode(mx.recordio.unpack(rec.read_idx(k))[1]) for k in keys]).astype(np.float32)
    finally:
        rec.close()
    brightness = pixels.mean(axis=(1, 2, 3))
    assert brightness.max() - brightness.min() > 10  # lighting / background change
    pairwise = [np.abs(pixels[i] - pixels[j]).mean() for i in range(len(pixels)) for j in range(i)]
    assert min(pairwise) > 15  # no two sightings nearly alike
    assert pixels.std(axis=0).mean() > 20  # per-pixel spread across the identity's images


def test_identity_is_structural_and_fixed_per_id() -> None:
    a, b = synth.identity_params(0, 7), synth.identity_params(0, 7)
    c = synth.identity_params(0, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.allclose(a["skin"], c["skin"]) and a["face_a"] != c["face_a"]


def test_raw_pixel_baseline_at_most_075_for_default_size(tmp_path: Path) -> None:
    for bench in synth.BENCHMARKS:
        images, issame = synth.benchmark_images(bench, synth.DEFAULT_CLASSES, synth.DEFAULT_PAIRS, synth.DEFAULT_SEED)
        path = tmp_path / f"{bench}.bin"
        write_bin(path, images, issame)
        accuracy = raw_pixel_baseline(path)
        print(f"raw-pixel baseline {bench}: {accuracy:.4f}")
        assert 0.4 < accuracy <= 0.75, bench


def test_worker_processes_draw_the_same_bytes(tmp_path: Path) -> None:
    # two training batches and three pair batches per benchmark, so two workers really split the work
    size = dict(num_classes=30, per_class=5, pairs=140, seed=2)
    synth.generate_dataset(tmp_path / "one", workers=1, **size)
    synth.generate_dataset(tmp_path / "two", workers=2, **size)
    assert size["num_classes"] * size["per_class"] > synth.BATCH and size["pairs"] > synth.BATCH
    for name in synth.OUTPUT_FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(synth, "benchmark_images", broken)
    with pytest.raises(RuntimeError):
        synth.generate_dataset(tmp_path / "out", seed=0, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_dataset_and_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main.main(["synth", str(tmp_path / "d"), "--classes", "3", "--per-class", "2", "--pairs", "20", "--seed", "1"]) == 0
    assert "6 training images of 3 identities" in capsys.readouterr().out
    assert (tmp_path / "d" / "agedb_30.bin").is_file()
    assert cli_main.main(["synth", str(tmp_path / "e"), "--pairs", "21"]) == 1
    assert "--pairs" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "notes.txt").write_text("mine")
    with pytest.raises(FaceflowError, match="notes.txt"):
        synth.generate_dataset(tmp_path / "f", seed=0, **SMALL)
    assert (tmp_path / "f" / "notes.txt").read_text() == "mine"
