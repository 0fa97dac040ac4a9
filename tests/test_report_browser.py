"""report.html in a real browser (headless Chromium from the Debian packages, over the DevTools protocol): it
renders with no console errors, every plot decodes, nothing overflows sideways; the screenshot is kept."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
from chromium_page import render_page
from PIL import Image
from report_samples import write_results

from faceflow.report.build import write_report

# where the full-page screenshot is copied for a person to look at (pytest's tmp_path is removed after a while)
SCREENSHOT = Path(os.environ.get("FACEFLOW_REPORT_SCREENSHOT",
                                 Path.home() / ".cache" / "faceflow-tests" / "report-screenshot.png"))


def test_report_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    results = write_results(tmp_path / "results")
    page = write_report(results, results / "report")["html"]
    result = render_page(page)
    assert result.errors == [], "\n".join(result.messages)
    checks = result.checks
    assert checks["images"] == 5 and checks["broken_images"] == 0, checks
    assert not checks["overflows_x"], "the page scrolls sideways at 1280 px"
    assert checks["headings"] == ["Summary", "Runs", "Accuracy vs step", "Training loss", "IJB", "Export parity",
                                  "Per-checkpoint accuracy"]
    shot = Image.open(io.BytesIO(result.screenshot)).convert("L")
    assert shot.width == 1280 and shot.height == checks["height"] > 2000
    pixels = np.asarray(shot)
    assert pixels.std() > 20 and (pixels < 100).mean() > 0.01  # text and plots drawn, not a blank page
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(page, SCREENSHOT.with_suffix(".html"))
    SCREENSHOT.write_bytes(result.screenshot)
    print(f"screenshot: {SCREENSHOT}")


def test_the_check_sees_console_errors_exceptions_and_failed_loads(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="missing.png"><script>console.error("drawn wrong"); notDefined();</script></body></html>')
    result = render_page(page)
    text = "\n".join(result.errors)
    assert "console.error: drawn wrong" in text
    assert "notDefined is not defined" in text
    assert "missing.png" in text and "failed load" in text, text
    assert result.checks["broken_images"] == 1
