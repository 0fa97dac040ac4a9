"""`faceflow validate` end to end on a tiny mbf checkpoint, and its one-line input errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from faceflow.runtime.flow import flow
import pytest

from faceflow.checkpoint import write_checkpoint
from faceflow.cli.main import main as faceflow_main
from faceflow.data.convert import convert_bin
from faceflow.data.verification_bin import write_bin
from faceflow.models import build_backbone

from test_eval_benchmarks import identity_pairs

FACEFLOW_CLI = [sys.executable, "-m", "faceflow.cli.main"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """A step-600 mbf checkpoint (embedding 16) and a 10-pair benchmark as .bin and OFRecord."""
    root = tmp_path_factory.mktemp("validate")
    flow.manual_seed(0)
    model = build_backbone("mbf", embedding_size=16)
    ckpt = write_checkpoint(root / "checkpoints", 600, {"network": "mbf", "embedding_size": 16}, {"epoch": 0},
                            lambda d: flow.save(model.state_dict(), str(d / "backbone")))
    images, issame = identity_pairs(10, seed=1)
    write_bin(root / "lfw.bin", images, issame)
    convert_bin(root / "lfw.bin", root / "lfw_rec", progress=False)
    return {"root": root, "ckpt": ckpt, "bin": root / "lfw.bin", "rec": root / "lfw_rec"}


@pytest.mark.slow
def test_validate_cli_bin_and_ofrecord_give_the_same_json(tiny_run) -> None:
    root = tiny_run["root"]
    proc = subprocess.run(
        FACEFLOW_CLI + ["validate", str(tiny_run["ckpt"]), "--bench", f"lfw={tiny_run['bin']}",
                   "--bench", f"lfw_rec={tiny_run['rec']}", "--batch-size", "20",
                   "--out", str(root / "all.json"), "--out-dir", str(root / "per_bench")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^\[lfw\]\[600\]XNorm: \d+\.\d\d$", proc.stdout, re.M)
    assert re.search(r"^\[lfw_rec\]\[600\]Accuracy-Flip: \d\.\d{5}\+-\d\.\d{5}$", proc.stdout, re.M)
    combined = json.loads((root / "all.json").read_text())
    per_bench = {p.stem: json.loads(p.read_text()) for p in (root / "per_bench").glob("*.json")}
    assert [r["benchmark"] for r in combined] == ["lfw", "lfw_rec"] and set(per_bench) == {"lfw", "lfw_rec"}
    lfw, rec = per_bench["lfw"], per_bench["lfw_rec"]
    assert lfw == combined[0]
    for key in ("benchmark", "checkpoint", "step", "accuracy", "accuracy_std", "threshold", "xnorm",
                "val_at_far", "far", "pairs", "accuracy_highest", "fold_accuracies"):
        assert key in lfw, key
    assert lfw["step"] == 600 and lfw["pairs"] == 10 and lfw["far_target"] == 1e-3
    assert len(lfw["fold_accuracies"]) == 10 and 0.0 <= lfw["accuracy"] <= 1.0 and lfw["xnorm"] > 0
    assert {k: v for k, v in lfw.items() if k != "benchmark"} == {k: v for k, v in rec.items() if k != "benchmark"}
    assert not [p for p in root.rglob(".*tmp*")]  # no temporaries left behind


def test_validate_single_bench_out_is_an_object(tiny_run, capsys) -> None:
    out = tiny_run["root"] / "one.json"
    assert faceflow_main(["validate", str(tiny_run["ckpt"]), "--bench", f"lfw={tiny_run['bin']}",
                          "--batch-size", "20", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert isinstance(record, dict) and record["benchmark"] == "lfw" and record["checkpoint"] == str(tiny_run["ckpt"])
    assert "[lfw][600]Accuracy-Flip: " in capsys.readouterr().out


@pytest.mark.parametrize("make_args, message", [
    (lambda r: ["--bench", "lfw"], "--bench 'lfw': expected NAME=PATH"),
    (lambda r: ["--bench", f"lfw={r['root'] / 'missing.bin'}"], "missing.bin: no such benchmark file"),
    (lambda r: ["--bench", f"lfw={r['bin']}", "--bench", f"lfw={r['rec']}"], "names must be unique"),
    (lambda r: ["--bench", f"lfw={r['bin']}", "--batch-size", "0"], "--batch-size: must be positive"),
])
def test_bad_arguments_give_one_line_errors(tiny_run, capsys, make_args, message) -> None:
    assert faceflow_main(["validate", str(tiny_run["ckpt"])] + make_args(tiny_run)) == 1
    err = capsys.readouterr().err
    assert err.startswith("faceflow validate: error: ") and message in err and err.count("\n") == 1


def test_missing_checkpoint_is_a_one_line_error(tiny_run, capsys) -> None:
    missing = tiny_run["root"] / "checkpoints" / "step_999999"
    assert faceflow_main(["validate", str(missing), "--bench", f"lfw={tiny_run['bin']}"]) == 1
    err = capsys.readouterr().err
    assert "not a faceflow checkpoint" in err and err.count("\n") == 1


def test_crafted_bin_is_refused_before_anything_runs(tiny_run, tmp_path, capsys) -> None:
    """`faceflow validate --bench x.bin` reads the .bin with the restricted unpickler (issue 18 point 1)."""
    marker = tmp_path / "marker"
    evil = tmp_path / "lfw.bin"
    evil.write_bytes(b"\x80\x02cos\nsystem\nX" + len(f"touch {marker}").to_bytes(4, "little")
                     + f"touch {marker}".encode() + b"\x85R.")
    out = tmp_path / "lfw.json"
    assert faceflow_main(["validate", str(tiny_run["ckpt"]), "--bench", f"lfw={evil}", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"faceflow validate: error: {evil}: refused pickle global os.system") and err.count("\n") == 1
    assert not marker.exists() and not out.exists()
