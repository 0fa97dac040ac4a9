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
from faceflow.data.synth_baseline import raw_pixel_baseline, raw_pixel_ijb
from faceflow.data.synth_faces import face_landmarks, render_faces, sample_nuisance, stack_identities
from faceflow.data.synth_ijb import CANVAS, write_benchmark
from faceflow.data.synth_layout import IJB_DIR
from faceflow.data.verification_bin import read_bin, write_bin
from faceflow.errors import FaceflowError
from faceflow.eval.ijb_layout import TARGETS, read_layout

SMALL = dict(num_classes=6, per_class=5, pairs=20, ijb_identities=4)


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
    assert sorted(p.name for p in small.iterdir()) == sorted(synth.OUTPUT_NAMES)
    for name in synth.OUTPUT_FILES:
        assert (small / name).read_bytes() == (again / name).read_bytes(), name
    for name in ("train.rec", "lfw.bin", "cfp_fp.bin", "agedb_30.bin"):
        assert (small / name).read_bytes() != (other / name).read_bytes(), name
    assert _tree_bytes(small / IJB_DIR) == _tree_bytes(again / IJB_DIR)
    assert _tree_bytes(small / IJB_DIR) != _tree_bytes(other / IJB_DIR)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


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


def test_ijb_sets_in_the_released_layout_on_their_own_identities(small: Path) -> None:
    used = set(range(SMALL["num_classes"]))
    for bench in synth.BENCHMARKS:
        used |= set(synth.benchmark_pool(bench, SMALL["num_classes"], SMALL["pairs"]).tolist())
    for target in TARGETS:
        layout = read_layout(small / IJB_DIR, target)
        pool = synth.ijb_pool(target, SMALL["num_classes"], SMALL["pairs"], SMALL["ijb_identities"])
        assert not used & set(pool.tolist()), "IJB identities are disjoint from training and the other benchmarks"
        used |= set(pool.tolist())
        subjects = np.concatenate([layout.probes.subjects] + [g.subjects for g in layout.galleries.values()])
        assert set(subjects.tolist()) == set(pool.tolist())
        # templates of several media, media of several frames, same and different pairs
        n_media = [len(np.unique(layout.medias[layout.templates == t])) for t in np.unique(layout.templates)]
        frames = np.unique(layout.medias, return_counts=True)[1]
        assert max(n_media) > 1 and min(n_media) >= 1 and frames.max() > 1
        assert 0 < layout.labels.sum() < len(layout.labels)
        assert len(np.unique(layout.templates)) == SMALL["ijb_identities"] * 3
        # loose crops of varied size whose landmarks lie inside; scores like a detector's
        sizes = {Image.open(path).size for path in layout.images}
        assert len(sizes) > 3 and all(w == h for w, h in sizes)
        for path, points in zip(layout.images, layout.landmarks):
            width = Image.open(path).size[0]
            assert (points > 0).all() and (points < width).all()
        assert 0.3 <= layout.scores.min() < layout.scores.max() <= 1.0


def test_ijb_landmarks_sit_on_the_drawn_pupils() -> None:
    rng = np.random.default_rng(0)
    ident = stack_identities([synth.identity_params(0, 9000 + i) for i in range(16)])
    nuis = sample_nuisance(rng, 16, profile="mixed")
    nuis["rot"] = np.linspace(-0.6, 0.6, 16).astype(np.float32)
    nuis["tx"], nuis["ty"] = rng.uniform(-14, 14, 16).astype(np.float32), rng.uniform(-14, 14, 16).astype(np.float32)
    nuis["noise"][:], nuis["occ_kind"][:], nuis["eye_open"][:] = 0, 0, 1
    images = render_faces(ident, nuis, rng, res=CANVAS, size=CANVAS)
    points = face_landmarks(ident, nuis, size=CANVAS)
    for image, face in zip(images, points):
        for x, y in face[:2]:  # the pupils are black discs of at least 1.2 px radius around the iris centre
            assert image[int(round(y)), int(round(x))].max() < 40, (x, y)
        assert face[0, 0] < face[1, 0] and face[3, 0] < face[4, 0], "left/right as seen in the image"
        across = face[1] - face[0]
        down = np.array([-across[1], across[0]])  # the face's downward direction (image y grows downwards)
        eyes, nose, mouth = face[:2].mean(axis=0) @ down, face[2] @ down, face[3:].mean(axis=0) @ down
        assert eyes < nose and eyes < mouth  # a broad smile can lift the corners to the nose


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


def test_raw_pixel_ijb_baseline_for_default_size(tmp_path: Path) -> None:
    pool = synth.ijb_pool("IJBC", synth.DEFAULT_CLASSES, synth.DEFAULT_PAIRS, synth.DEFAULT_IDENTITIES)
    write_benchmark(tmp_path / "IJBC", "IJBC", pool, lambda i: synth.identity_params(synth.DEFAULT_SEED, i),
                    synth.DEFAULT_SEED)
    result = raw_pixel_ijb(tmp_path, "IJBC")
    tar = result["tar_at_far"]["1e-2"]
    print(f"raw-pixel baseline IJBC (synthetic, {result['templates']} templates, {result['pairs']} pairs): "
          f"TAR@FAR=1e-2 {tar:.4f}, 1e-3 {result['tar_at_far']['1e-3']:.4f}, 1e-1 {result['tar_at_far']['1e-1']:.4f}")
    assert 0.02 < tar <= 0.4


def test_worker_processes_draw_the_same_bytes(tmp_path: Path) -> None:
    # two training batches and three pair batches per benchmark, and two IJB batches, so two workers split the work
    size = dict(num_classes=30, per_class=5, pairs=140, seed=2, ijb_identities=8)
    synth.generate_dataset(tmp_path / "one", workers=1, **size)
    synth.generate_dataset(tmp_path / "two", workers=2, **size)
    assert size["num_classes"] * size["per_class"] > synth.BATCH and size["pairs"] > synth.BATCH
    for name in synth.OUTPUT_FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert len(read_layout(tmp_path / "one" / IJB_DIR, "IJBC").images) > 64
    assert _tree_bytes(tmp_path / "one" / IJB_DIR) == _tree_bytes(tmp_path / "two" / IJB_DIR)


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(synth, "benchmark_images", broken)
    with pytest.raises(RuntimeError):
        synth.generate_dataset(tmp_path / "out", seed=0, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_dataset_and_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main.main(["synth", str(tmp_path / "d"), "--classes", "3", "--per-class", "2", "--pairs", "20", "--seed", "1",
                          "--ijb-identities", "4"]) == 0
    out = capsys.readouterr().out
    assert "6 training images of 3 identities" in out and "ijb/IJBC with " in out and "ijb/IJBB with " in out
    assert (tmp_path / "d" / "agedb_30.bin").is_file()
    assert (tmp_path / "d" / "ijb" / "IJBB" / "meta" / "ijbb_1N_gallery_S2.csv").is_file()
    assert cli_main.main(["synth", str(tmp_path / "g"), "--classes", "3", "--per-class", "2", "--pairs", "20",
                          "--ijb-identities", "0"]) == 0
    assert not (tmp_path / "g" / "ijb").exists()
    assert cli_main.main(["synth", str(tmp_path / "h"), "--ijb-identities", "3"]) == 1
    assert "--ijb-identities" in capsys.readouterr().err
    assert cli_main.main(["synth", str(tmp_path / "e"), "--pairs", "21"]) == 1
    assert "--pairs" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "notes.txt").write_text("mine")
    with pytest.raises(FaceflowError, match="notes.txt"):
        synth.generate_dataset(tmp_path / "f", seed=0, **SMALL)
    assert (tmp_path / "f" / "notes.txt").read_text() == "mine"
