"""`faceflow report`: accuracy.csv, report.md (seed's table + per-checkpoint tables), self-contained HTML."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd

from faceflow.cli.main import main as faceflow_main

ACC = {  # run -> step -> bench -> accuracy
    "arc": {10: {"lfw": 0.80, "cfp_fp": 0.70, "agedb_30": 0.60}, 20: {"lfw": 0.95, "cfp_fp": 0.85, "agedb_30": 0.75}},
    "cos": {10: {"lfw": 0.90, "cfp_fp": 0.80, "agedb_30": 0.70}, 20: {"lfw": 0.85, "cfp_fp": 0.75, "agedb_30": 0.65}},
}


def _results(root: Path) -> Path:
    for run, steps in ACC.items():
        for step, benches in steps.items():
            folder = root / "runs" / run / "validation" / f"step_{step:06d}"
            folder.mkdir(parents=True)
            for bench, accuracy in benches.items():
                (folder / f"{bench}.json").write_text(json.dumps({
                    "benchmark": bench, "step": step, "accuracy": accuracy, "accuracy_std": 0.01,
                    "threshold": 1.23, "xnorm": 20.5 + step, "checkpoint": "x",
                }))
        lines = [json.dumps({"step": s, "loss": 30.0 - s, "lr": 0.1, "epoch": 0}) for s in range(0, 21, 5)]
        (root / "runs" / run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (root / "runs" / "stale").mkdir()
    return root


def test_report_files(tmp_path: Path) -> None:
    results = _results(tmp_path / "results")
    out = tmp_path / "results" / "report"
    assert faceflow_main(["report", str(results), "--out", str(out), "--runs", "arc,cos"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.csv", "report.html", "report.md"]

    table = pd.read_csv(out / "accuracy.csv")
    assert list(table.columns) == ["run", "step", "benchmark", "accuracy", "std", "threshold", "xnorm"]
    assert len(table) == 12 and set(table["run"]) == {"arc", "cos"}
    row = table[(table.run == "arc") & (table.step == 20) & (table.benchmark == "lfw")].iloc[0]
    assert row.accuracy == 0.95 and row.xnorm == 40.5

    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    assert header == "| run | best step | LFW (%) | CFP-FP (%) | AgeDB-30 (%) |"
    assert "| arc | 20 | 95.00 ± 1.00 | 85.00 ± 1.00 | 75.00 ± 1.00 |" in md  # best = step 20 for arc
    assert "| cos | 10 | 90.00 ± 1.00 | 80.00 ± 1.00 | 70.00 ± 1.00 |" in md  # best = step 10 for cos
    assert "## arc" in md and "## cos" in md and "stale" not in md

    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3  # loss curve + one accuracy plot per run
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    assert not re.search(r'(src|href)="(?!data:)', page), "report.html must not reference external files"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_report_without_results(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    assert faceflow_main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert "No validation results" in (tmp_path / "report" / "report.md").read_text()


def test_report_unknown_run_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs").mkdir()
    assert faceflow_main(["report", str(tmp_path), "--out", str(tmp_path / "r"), "--runs", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
