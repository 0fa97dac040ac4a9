"""Benchmark reading (.bin and OFRecord), flip embedding and `validate_model` with a tiny network."""
from __future__ import annotations

import io
from pathlib import Path


import numpy as np
from faceflow.runtime.flow import flow, nn
import pytest
from PIL import Image

from faceflow.data.convert import convert_bin
from faceflow.data.ofrecord import PartsWriter, serialize_val_record
from faceflow.data.verification_bin import write_bin
from faceflow.errors import DataFormatError
from faceflow.eval.benchmarks import load_benchmark, read_encoded, result_lines, validate_model
from faceflow.eval.embedding import decode_images, embed, normalize_batch


class PooledLinear(nn.Module):
    """A tiny stand-in backbone: 14x14 average pooling then a fixed random projection."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(14)
        self.fc = nn.Linear(3 * 8 * 8, dim)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        return self.fc(flow.flatten(self.pool(x), 1))


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def identity_pairs(n_pairs: int, seed: int = 0) -> tuple[list[bytes], list[bool]]:
    """Blocky 112x112 'faces' per identity; same pairs are two noisy views of one identity."""
    rng = np.random.default_rng(seed)

    def face(identity: np.ndarray) -> bytes:
        noisy = identity.astype(np.int16) + rng.integers(-6, 7, identity.shape)
        return _png(np.clip(noisy, 0, 255).astype(np.uint8))

    images, issame = [], []
    for i in range(n_pairs):
        a = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((14, 14, 1))).astype(np.uint8)
        b = a if i % 2 == 0 else np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((14, 14, 1))).astype(np.uint8)
        images += [face(a), face(b)]
        issame.append(i % 2 == 0)
    return images, issame


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    images, issame = identity_pairs(40)
    write_bin(root / "lfw.bin", images, issame)
    convert_bin(root / "lfw.bin", root / "lfw_ofrecord", progress=False)
    return root / "lfw.bin", root / "lfw_ofrecord"


def test_bin_and_ofrecord_read_the_same(bench_files) -> None:
    bin_path, rec_dir = bench_files
    images_bin, flags_bin = read_encoded(bin_path)
    images_rec, flags_rec = read_encoded(rec_dir)
    assert images_bin == images_rec and flags_bin.tolist() == flags_rec.tolist()
    assert len(flags_bin) == 40 and flags_bin[0] and not flags_bin[1]


def test_decode_gives_rgb_nchw_and_normalisation(bench_files) -> None:
    images, _ = read_encoded(bench_files[0])
    decoded = decode_images(images[:4])
    assert decoded.shape == (4, 3, 112, 112) and decoded.dtype == np.uint8
    expected = np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(decoded[0], expected)
    norm = normalize_batch(np.array([[[[0, 255]]]], dtype=np.uint8))
    assert norm.tolist() == [[[[-1.0, 1.0]]]]


def test_embed_returns_originals_and_horizontal_flips(bench_files) -> None:
    flow.manual_seed(0)
    model = PooledLinear()
    data = load_benchmark(bench_files[0])
    originals, flips = embed(model, data.images[:6], batch_size=4)
    with flow.no_grad():
        direct = model(flow.tensor(normalize_batch(data.images[:6]))).numpy()
        mirrored = model(flow.tensor(normalize_batch(data.images[:6][..., ::-1].copy()))).numpy()
    np.testing.assert_allclose(originals, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flips, mirrored, rtol=1e-5, atol=1e-5)
    assert not np.allclose(originals, flips)
    assert model.training  # restored after evaluation


def test_validate_model_scores_bin_and_ofrecord_alike(bench_files) -> None:
    flow.manual_seed(0)
    model = PooledLinear()
    lines: list[str] = []
    highest: dict[str, float] = {}
    results = validate_model(model, {"lfw": bench_files[0], "lfw_rec": bench_files[1]}, batch_size=16,
                             step=600, highest=highest, log=lines.append)
    a, b = results["lfw"], results["lfw_rec"]
    assert a.accuracy == b.accuracy == 1.0 and a.xnorm == b.xnorm and a.threshold == b.threshold
    assert a.pairs == 40 and highest == {"lfw": 1.0, "lfw_rec": 1.0}
    assert lines[0] == f"[lfw][600]XNorm: {a.xnorm:.2f}"
    assert lines[1] == "[lfw][600]Accuracy-Flip: 1.00000+-0.00000"
    assert load_benchmark(bench_files[0]) is load_benchmark(bench_files[0])  # decoded once, cached


def test_result_lines_show_accuracy_highest() -> None:
    from faceflow.eval.verification import evaluate_embeddings

    rng = np.random.default_rng(0)
    result = evaluate_embeddings(rng.normal(size=(40, 4)), np.arange(20) % 2 == 0)
    result.accuracy_highest = 0.99
    assert result_lines("agedb_30", 12000, result)[2] == "[agedb_30][12000]Accuracy-Highest: 0.99000"


def test_missing_benchmark_and_bad_records_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(DataFormatError, match="no such benchmark") as err:
        read_encoded(tmp_path / "absent.bin")
    assert "\n" not in str(err.value)
    with PartsWriter(tmp_path / "bad", 1) as writer:
        writer.write(serialize_val_record(_png(np.zeros((112, 112, 3), np.uint8)), True))
        writer.write(serialize_val_record(_png(np.zeros((112, 112, 3), np.uint8)), False))
    with pytest.raises(DataFormatError, match="record 1: issame differs"):
        read_encoded(tmp_path / "bad")
    write_bin(tmp_path / "corrupt.bin", [b"not an image", b"x"], [True])
    with pytest.raises(DataFormatError, match="image 0: cannot decode"):
        load_benchmark(tmp_path / "corrupt.bin", use_cache=False)


def test_embed_accepts_a_global_model_as_training_uses() -> None:
    from faceflow.runtime.device import all_ranks_placement

    flow.manual_seed(0)
    model = PooledLinear()
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 112, 112), dtype=np.uint8)
    local = embed(model, images, batch_size=4)
    model.to_global(placement=all_ranks_placement("cpu"), sbp=flow.sbp.broadcast)
    global_ = embed(model, images, batch_size=4)
    np.testing.assert_array_equal(local[0], global_[0])
    np.testing.assert_array_equal(local[1], global_[1])
