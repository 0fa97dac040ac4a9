"""`open_embedder`: onnxruntime on a once-exported ONNX cache and OneFlow eager give the same verification
figures (mbf and the real r18), the cache is reused and exported once under concurrency, a failed export falls
back to OneFlow in one logged line, and an .onnx MODEL runs directly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from faceflow.checkpoint import write_checkpoint
from faceflow.data.verification_bin import write_bin
from faceflow.errors import FaceflowError
from faceflow.eval import onnx_cache
from faceflow.eval.benchmarks import load_benchmark, validate_with
from faceflow.eval.engine import open_embedder
from faceflow.eval.verification import VerificationResult, evaluate_embeddings
from faceflow.models import build_backbone
from faceflow.runtime.flow import flow

from conftest import REPO
from test_eval_benchmarks import identity_pairs

TOLERANCE = 1e-4
TINY_MBF = {"embedding_size": 16, "network_kwargs": {"width_mult": 0.125, "blocks": [1, 1, 1, 1]}}


def _checkpoint(root: Path, network: str, embedding_size: int = 512, network_kwargs: dict | None = None) -> Path:
    """A step-100 checkpoint of a seeded, randomly initialised `network`."""
    flow.manual_seed(0)
    model = build_backbone(network, embedding_size=embedding_size, **(network_kwargs or {}))
    config = {"network": network, "embedding_size": embedding_size, "network_kwargs": network_kwargs or {}}
    return write_checkpoint(root / "checkpoints", 100, config, {"epoch": 0},
                            lambda d: flow.save(model.state_dict(), str(d / "backbone")))


@pytest.fixture(scope="module")
def lfw(tmp_path_factory) -> Path:
    """A 20-pair synthetic benchmark (two pairs per fold)."""
    path = tmp_path_factory.mktemp("lfw") / "lfw.bin"
    write_bin(path, *identity_pairs(20, seed=3))
    return path


def _score(embedder, lfw: Path) -> VerificationResult:
    return validate_with(embedder.embed, {"lfw": lfw}, log=lambda line: None)["lfw"]


def _assert_same_protocol(a: VerificationResult, b: VerificationResult) -> None:
    assert abs(a.accuracy - b.accuracy) <= TOLERANCE, (a.accuracy, b.accuracy)
    assert abs(a.threshold - b.threshold) <= TOLERANCE and abs(a.val - b.val) <= TOLERANCE
    assert a.fold_accuracies == pytest.approx(b.fold_accuracies, abs=TOLERANCE)
    assert a.xnorm == pytest.approx(b.xnorm, rel=TOLERANCE)


@pytest.mark.parametrize("network, kwargs", [
    ("mbf", TINY_MBF),
    pytest.param("r18", {"embedding_size": 128}, marks=pytest.mark.slow),  # the full r18 in OneFlow eager on CPU
])
def test_engines_agree_on_the_protocol(tmp_path: Path, lfw: Path, network: str, kwargs: dict) -> None:
    """mbf and the full r18: onnxruntime (auto on CPU) and OneFlow eager score alike within 1e-4."""
    ckpt = _checkpoint(tmp_path, network, **kwargs)
    lines: list[str] = []
    fast = open_embedder(ckpt, device="cpu", batch_size=20, threads=2, log=lines.append)
    eager = open_embedder(ckpt, device="cpu", batch_size=20, engine="oneflow", log=lines.append)
    assert (fast.engine, eager.engine) == ("onnxruntime", "oneflow") and fast.device == eager.device == "cpu"
    assert (fast.step, fast.network) == (100, network)
    data = load_benchmark(lfw)
    (a, a_flip), (b, b_flip) = fast.embed(data.images), eager.embed(data.images)
    assert abs(a - b).max() <= 1e-4 * abs(b).max() and abs(a_flip - b_flip).max() <= 1e-4 * abs(b_flip).max()
    _assert_same_protocol(evaluate_embeddings(a, data.issame, a_flip), evaluate_embeddings(b, data.issame, b_flip))
    record = json.loads((ckpt / "validation.parity.json").read_text())
    assert record["passed"] is True and record["min_cosine"] >= 0.9999 and record["images"] == 8
    assert "exported" in lines[0] and lines[1].endswith("oneflow on cpu (--engine oneflow)")


def test_cache_is_reused_without_exporting_again(tmp_path: Path, monkeypatch) -> None:
    ckpt = _checkpoint(tmp_path, "mbf", **TINY_MBF)
    cache = tmp_path / "elsewhere" / "tiny.onnx"
    lines: list[str] = []
    open_embedder(ckpt, device="cpu", onnx_cache=cache, log=lines.append)
    stamp = cache.stat().st_mtime_ns
    assert (tmp_path / "elsewhere" / "tiny.parity.json").is_file() and not (ckpt / "validation.onnx").exists()

    def no_export(*args, **kwargs):
        raise AssertionError("exported a second time")

    monkeypatch.setattr(onnx_cache, "export_onnx", no_export)
    second = open_embedder(ckpt, device="cpu", onnx_cache=cache, log=lines.append)
    assert second.engine == "onnxruntime" and cache.stat().st_mtime_ns == stamp
    assert "exported" in lines[0] and f"(cached {cache}, parity min cosine " in lines[1]


def test_changed_checkpoint_is_exported_again(tmp_path: Path) -> None:
    """The cache belongs to the checkpoint it was exported from (fingerprint of its files)."""
    ckpt = _checkpoint(tmp_path, "mbf", **TINY_MBF)
    cache = tmp_path / "shared.onnx"
    assert onnx_cache.onnx_for_checkpoint(ckpt, cache).exported
    other = _checkpoint(tmp_path / "other", "mbf", **TINY_MBF)
    (other / "state.json").write_text(json.dumps({"step": 100, "epoch": 1}))
    again = onnx_cache.onnx_for_checkpoint(other, cache)
    assert again.exported and again.path == cache


_CONCURRENT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from faceflow.eval.engine import open_embedder
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.02)
    open_embedder(sys.argv[1], device="cpu")
""")


def test_two_processes_export_a_checkpoint_once(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, "mbf", **TINY_MBF)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "USER": "root"}
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(ckpt), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    go.touch()  # both have imported faceflow and OneFlow by the time they see it, or soon after
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    lines = [out.strip().splitlines()[-1] for out, _ in outputs]
    assert sorted("(exported" in line for line in lines) == [False, True], lines
    assert sum("(cached" in line for line in lines) == 1, lines


def test_failed_export_falls_back_to_oneflow_in_one_line(tmp_path: Path, lfw: Path, monkeypatch) -> None:
    ckpt = _checkpoint(tmp_path, "mbf", **TINY_MBF)
    calls = []

    def broken(model, path, images):
        calls.append(path)
        raise FaceflowError(f"{path}: oneflow-onnx conversion failed: KeyError: 'made to fail'")

    monkeypatch.setattr(onnx_cache, "export_onnx", broken)
    lines: list[str] = []
    fallback = open_embedder(ckpt, device="cpu", batch_size=16, log=lines.append)
    assert fallback.engine == "oneflow" and fallback.note == "fallback"
    assert lines[0] == (f"{ckpt}: onnxruntime not used, OneFlow eager instead: {ckpt / 'validation.onnx'}: "
                        "oneflow-onnx conversion failed: KeyError: 'made to fail'")
    assert len(lines) == 2 and not (ckpt / "validation.onnx").exists()
    record = json.loads((ckpt / "validation.parity.json").read_text())
    assert record["passed"] is False and "made to fail" in record["error"]
    eager = open_embedder(ckpt, device="cpu", batch_size=16, engine="oneflow", log=lambda line: None)
    assert _score(fallback, lfw).to_dict() == _score(eager, lfw).to_dict()
    open_embedder(ckpt, device="cpu", log=lines.append)  # the recorded failure is not retried
    assert len(calls) == 1 and "(recorded earlier)" in lines[2]
    with pytest.raises(FaceflowError, match="--engine onnxruntime: .*made to fail"):
        open_embedder(ckpt, device="cpu", engine="onnxruntime", log=lambda line: None)


def test_onnx_model_runs_in_onnxruntime(tmp_path: Path, lfw: Path) -> None:
    ckpt = _checkpoint(tmp_path, "mbf", **TINY_MBF)
    exported = onnx_cache.onnx_for_checkpoint(ckpt, tmp_path / "model.onnx").path
    lines: list[str] = []
    model = open_embedder(exported, batch_size=16, log=lines.append)
    assert (model.engine, model.device, model.step, model.network) == ("onnxruntime", "cpu", 0, "onnx")
    assert model.model == {"path": str(exported), "format": "onnx"} and lines == [f"{exported}: onnxruntime on cpu"]
    eager = open_embedder(ckpt, device="cpu", batch_size=16, engine="oneflow", log=lambda line: None)
    _assert_same_protocol(_score(model, lfw), _score(eager, lfw))
    for kwargs, message in [({"engine": "oneflow"}, "--engine oneflow needs a faceflow checkpoint"),
                            ({"device": "cuda"}, "--device cuda: an ONNX file runs in onnxruntime on CPU")]:
        with pytest.raises(FaceflowError, match=message):
            open_embedder(exported, log=lambda line: None, **kwargs)
    with pytest.raises(FaceflowError, match="no such ONNX file"):
        open_embedder(tmp_path / "missing.onnx", log=lambda line: None)


def test_validate_cli_scores_several_benchmarks_alike_on_both_engines(tmp_path: Path, lfw: Path, capsys) -> None:
    from faceflow.cli.main import main as faceflow_main

    ckpt = _checkpoint(tmp_path, "mbf", **TINY_MBF)
    cache = tmp_path / "cache" / "m.onnx"
    for engine in ("auto", "oneflow"):
        assert faceflow_main(["validate", str(ckpt), "--bench", f"lfw={lfw}", "--bench", f"cfp_fp={lfw}",
                              "--device", "cpu", "--engine", engine, "--threads", "1", "--onnx-cache", str(cache),
                              "--batch-size", "8", "--out-dir", str(tmp_path / engine)]) == 0
    out = capsys.readouterr().out
    assert f"{ckpt}: onnxruntime on cpu (exported {cache}, parity min cosine " in out
    assert f"{ckpt}: oneflow on cpu (--engine oneflow)" in out and "[cfp_fp][100]Accuracy-Flip: " in out
    for bench in ("lfw", "cfp_fp"):
        fast, eager = (json.loads((tmp_path / engine / f"{bench}.json").read_text()) for engine in ("auto", "oneflow"))
        assert (fast["benchmark"], fast["step"], fast["network"]) == (bench, 100, "mbf")
        assert abs(fast["accuracy"] - eager["accuracy"]) <= TOLERANCE and fast["pairs"] == eager["pairs"] == 20
