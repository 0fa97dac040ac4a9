"""`faceflow report`: accuracy.csv, report.md (the InsightFace-style table first, then the runs side by side, IJB,
export parity, per-checkpoint tables) and one self-contained HTML page comparing every run."""
from __future__ import annotations

import base64
import json
import re
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_samples import IMPORTED, ijb_record, write_results

from faceflow.cli.main import main as faceflow_main
from faceflow.report.runs import timing

RUNS = "r50_arcface,mbf_cosface_pfc,zoo_r100"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report folder of the sample results (built once for the tests that only read it)."""
    results = write_results(tmp_path_factory.mktemp("report") / "results")
    assert faceflow_main(["report", str(results), "--out", str(results / "report"), "--runs", RUNS]) == 0
    return results / "report"


def _tables(markdown: str) -> list[list[str]]:
    """The Markdown tables of a page, each as its lines."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_report_files_and_accuracy_csv(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.csv", "report.html", "report.md"]
    table = pd.read_csv(out / "accuracy.csv")
    assert list(table.columns) == ["run", "step", "benchmark", "accuracy", "std", "threshold", "xnorm"]
    assert len(table) == 21 and set(table["run"]) == {"r50_arcface", "mbf_cosface_pfc", IMPORTED}
    row = table[(table.run == "r50_arcface") & (table.step == 20) & (table.benchmark == "lfw")].iloc[0]
    assert row.accuracy == 0.97 and row.xnorm == 40.5
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_markdown_summary_first_then_runs_side_by_side(out: Path) -> None:
    md = (out / "report.md").read_text()
    tables = _tables(md)
    summary = tables[0]
    assert summary[0] == "| run | best step | LFW (%) | CFP-FP (%) | AgeDB-30 (%) |"
    assert "| r50_arcface | 20 | 97.00 ± 1.00 | 88.00 ± 1.00 | 85.00 ± 1.00 |" in summary  # best of 3 checkpoints
    assert "| mbf_cosface_pfc | 30 | 88.00 ± 1.00 | 78.00 ± 1.00 | 69.00 ± 1.00 |" in summary
    assert "| zoo_r100 | 0 | 99.80 ± 1.00 | 98.50 ± 1.00 | 98.10 ± 1.00 |" in summary  # evaluate-only row
    models, training = tables[1], tables[2]
    assert models[0] == "| run | kind | network | embedding | loss (margins) | FC |"
    assert models[2:] == [
        "| mbf_cosface_pfc | trained (cpu, eager) | mbf (width_mult 0.25, stem_stride 4) | 128 | "
        "cosface (m1 1, m2 0, m3 0.4, s 32) | partial_fc 0.3 |",
        "| r50_arcface | trained (cuda, graph, fp16) | r50 | 512 | arcface (m1 1, m2 0.5, m3 0, s 64) | "
        "model_parallel |",
        "| zoo_r100 | evaluate-only (glint360k_r100.onnx) | r100 | 512 | - | - |",
    ]
    assert training[0] == "| run | processes x batch | optimizer | LR schedule | steps | wall time | samples/s |"
    assert training[2:] == [
        "| mbf_cosface_pfc | 1 x 32 = 32 | adamw (lr 0.001, wd 0.05) | poly (power 2) | 30 | 0:30:00 | 250.0 |",
        "| r50_arcface | 2 x 64 = 128 | sgd (lr 0.1, momentum 0.9, wd 0.0005) | "
        "multistep (x0.1 at 10, x0.01 at 20), warmup 5 | 30 | 0:30:00 | 1000.0 |",
        "| zoo_r100 | - | - | - | - | - | - |",
    ]
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == ["## Runs", "## IJB 1:1 verification (TAR %)", "## IJB 1:N identification",
                        "## Export parity (against OneFlow)", "## mbf_cosface_pfc", "## r50_arcface", "## zoo_r100"]
    assert "stale" not in md


def test_ijb_and_export_tables(out: Path) -> None:
    tables = _tables((out / "report.md").read_text())
    tar = tables[3]
    assert tar[0] == "| run | target | @1e-6 | @1e-5 | @1e-4 | @1e-3 | @1e-2 | @1e-1 | AUC |"
    expected = ijb_record(IMPORTED, "IJBC", 6.0)
    cells = [f"{100 * expected['tar_at_far'][far]:.2f}" for far in ("1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1")]
    cells[0] += "*"  # 1e-6 < 1 / 200000 negative pairs
    assert f"| zoo_r100 | IJBC | {' | '.join(cells)} | {expected['auc']:.4f} |" in tar
    assert [line.split(" | ")[:2] for line in tar[2:]] == [
        ["| r50_arcface", "IJBB"], ["| mbf_cosface_pfc", "IJBC"], ["| r50_arcface", "IJBC"], ["| zoo_r100", "IJBC"]]
    identification = tables[4]
    assert identification[0].startswith("| run | target | top-1 (%) |")
    assert "| zoo_r100 | IJBC | 90.00 | 80.00 | 85.00 | 30.00 | 50.00 |" in identification
    parity = tables[5]
    assert parity[0] == "| run | step | format | images | max abs diff | min cosine | parity |"
    assert "| r50_arcface | 20 | onnx (opset 11) | 8 | 3.10e-06 | 0.99999994 | passed |" in parity
    assert "| zoo_r100 | 0 | mxnet (epoch 0) | 8 | 3.10e-06 | 0.99999994 | passed |" in parity


def test_html_is_one_self_contained_page_with_comparison_plots(out: Path) -> None:
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5  # accuracy per benchmark (3), training loss, IJB ROC
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    assert not re.search(r'(src|href)="(?!data:|#)', page), "report.html must not reference external files"
    assert "<script" not in page
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert alts == ["LFW accuracy", "CFP-FP accuracy", "AgeDB-30 accuracy", "training loss", "IJB ROC"]
    sections = re.findall(r'<h2 id="(\w+)">', page)
    assert sections == ["summary", "runs", "accuracy", "loss", "ijb", "export", "checkpoints"]
    assert all(f'href="#{anchor}"' in page for anchor in sections)
    assert page.index("best step") < page.index("processes x batch")


def test_hostile_text_is_escaped(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results")
    config = results / "runs" / "r50_arcface" / "config.yaml"
    config.write_text(config.read_text().replace("network: r50", 'network: "<script>x</script> | a\\nb"'))
    out = results / "report"
    assert faceflow_main(["report", str(results), "--out", str(out), "--runs", RUNS]) == 0
    assert "<script>" not in (out / "report.html").read_text()
    row = next(line for line in (out / "report.md").read_text().splitlines() if "trained (cuda" in line)
    assert "&lt;" not in row and "<script>x</script> \\| a b |" in row  # one table row, the pipe escaped


def test_odd_config_values_are_shown_as_written(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results")
    config = results / "runs" / "mbf_cosface_pfc" / "config.yaml"
    text = config.read_text().replace("loss: cosface", "loss: [1, 2]").replace("batch_size: 32", "batch_size: big")
    config.write_text(text.replace("margins:\n  s: 32.0", "margins: {s: wide}"))
    assert faceflow_main(["report", str(results), "--out", str(results / "report"), "--runs", RUNS]) == 0
    lines = (results / "report" / "report.md").read_text().splitlines()
    assert any(line.startswith("| mbf_cosface_pfc | trained (cpu, eager) |") and "| [1, 2] |" in line for line in lines)
    assert "| mbf_cosface_pfc | 1 x big |" in "\n".join(lines)


def test_wall_time_across_resumes_and_from_older_logs() -> None:
    resumed = pd.DataFrame({"step": [10, 20, 30], "time": [100.0, 110.0, 5000.0], "elapsed": [10.0, 20.0, 31.5],
                            "samples_per_sec": [50.0, 400.0, 410.0]})
    assert timing(resumed) == (31.5, 400.0)  # the gap before the resume is not training time
    older = resumed.drop(columns="elapsed")
    assert timing(older) == (4900.0, 400.0)


def test_report_without_results(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    assert faceflow_main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert "No validation results" in (tmp_path / "report" / "report.md").read_text()


def test_report_unknown_run_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs").mkdir()
    assert faceflow_main(["report", str(tmp_path), "--out", str(tmp_path / "r"), "--runs", "nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_bad_run_files_are_one_line_errors_naming_the_file(tmp_path: Path, capsys) -> None:
    results = write_results(tmp_path / "results")
    run = results / "runs" / "r50_arcface"
    cases = [
        (run / "ijb" / "IJBC.json", "{not json", "not valid JSON"),
        (run / "ijb" / "IJBC.json", json.dumps({"target": "IJBC", "tar_at_far": {"1e-4": "high"}}), "tar_at_far"),
        (run / "ijb" / "IJBC.json", json.dumps({"tar_at_far": {"1e-4": 0.9}, "roc": {"fpr": [0, 1], "tpr": [1]}}),
         "same length"),
        (run / "export" / "export.json", json.dumps({"formats": {"onnx": {"min_cosine": 1}}}), "formats.onnx"),
        (run / "export" / "export.json", json.dumps({"formats": {"onnx": {"min_cosine": "x", "max_abs_diff": 0}}}),
         "formats.onnx"),
        (run / "config.yaml", "network: [unclosed", "not valid YAML"),
        (run / "checkpoints" / "step_000030" / "state.json", "[1, 2]", "expected a JSON object"),
    ]
    for path, text, words in cases:
        original = path.read_text()
        path.write_text(text)
        assert faceflow_main(["report", str(results), "--out", str(tmp_path / "r")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and words in err, (path, err)
        path.write_text(original)


def test_report_reads_what_faceflow_ijb_writes(tmp_path: Path) -> None:
    """The IJB tables from a result `faceflow ijb` itself wrote (a tiny synthetic IJB-C, block-mean features)."""
    from faceflow.data import synth
    from faceflow.data.synth_ijb import write_benchmark
    from faceflow.eval.ijb import evaluate_ijb, write_result

    write_benchmark(tmp_path / "ijb" / "IJBC", "IJBC", np.arange(5000, 5006), partial(synth.identity_params, 0), seed=0)
    result = evaluate_ijb(tmp_path / "ijb", "IJBC", lambda batch: batch.reshape(len(batch), 3, 14, 8, 14, 8)
                          .mean(axis=(3, 5)).reshape(len(batch), -1), progress=False)
    results = write_results(tmp_path / "results")
    write_result(result, results / "runs" / "r50_arcface" / "ijb" / "IJBC.json")
    assert faceflow_main(["report", str(results), "--out", str(results / "report"), "--runs", RUNS]) == 0
    tables = _tables((results / "report" / "report.md").read_text())
    cells = [f"{100 * tar:.2f}{'*' if float(far) < result['min_far'] else ''}"
             for far, tar in result["tar_at_far"].items()]
    assert f"| r50_arcface | IJBC | {' | '.join(cells)} | {result['auc']:.4f} |" in tables[3]
    top_k = result["identification"]["mean"]["top_k"]
    assert any(line.startswith(f"| r50_arcface | IJBC | {100 * top_k['top1']:.2f} |") for line in tables[4])
    assert "IJB ROC" in (results / "report" / "report.html").read_text()


def test_only_configured_benchmarks_and_ijb_targets_are_shown(tmp_path: Path) -> None:
    """Results left by a benchmark or IJB target dropped from the config stay out of every report file."""
    results = write_results(tmp_path / "results")
    report = results / "report"
    assert faceflow_main(["report", str(results), "--out", str(report), "--runs", RUNS,
                          "--benchmarks", "lfw,agedb_30", "--ijb-targets", "IJBC"]) == 0
    table = pd.read_csv(report / "accuracy.csv")
    assert set(table["benchmark"]) == {"lfw", "agedb_30"} and len(table) == 14
    md = (report / "report.md").read_text()
    assert _tables(md)[0][0] == "| run | best step | LFW (%) | AgeDB-30 (%) |"
    tar = _tables(md)[3]
    assert [line.split(" | ")[1] for line in tar[2:]] == ["IJBC", "IJBC", "IJBC"]
    assert "IJBB" not in md and "IJBB" not in (report / "report.html").read_text()
    assert faceflow_main(["report", str(results), "--out", str(report), "--runs", RUNS, "--ijb-targets", ""]) == 0
    md = (report / "report.md").read_text()
    assert "## IJB" not in md and "CFP-FP" in md
