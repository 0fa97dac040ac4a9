"""The real `insightface` package (0.7.3) in a cached venv outside the repo, to check alignment against
`insightface.utils.face_align.norm_crop` itself.

insightface ships as an sdist with a Cython extension and needs a Python newer than the project's 3.10 stack
allows for its own pins, so it gets its own venv (system `python3`), built once under
`~/.cache/faceflow-tests/` with numpy < 2 (the extension is compiled against it) and the same scikit-image
and OpenCV versions as the project. `norm_crop_reference` runs it in a subprocess on .npy files.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("FACEFLOW_TEST_CACHE", Path.home() / ".cache" / "faceflow-tests"))
VENV = CACHE / "insightface-0.7.3"
READY = VENV / ".faceflow-ready"
PINS = ["numpy==1.26.4", "scikit-image==0.24.0", "opencv-python-headless==4.11.0.86", "onnxruntime==1.23.2"]
INSTALL_TIMEOUT = 1800

_SCRIPT = """
import sys, numpy as np
from insightface.utils import face_align
img, lmk = np.load(sys.argv[1]), np.load(sys.argv[2])
np.save(sys.argv[3], np.stack([face_align.norm_crop(img, l) for l in lmk]))
"""


def _run(args: list[str], log: Path) -> None:
    with log.open("a") as out:
        subprocess.run(args, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT)


def ensure_insightface() -> tuple[Path | None, str]:
    """(python of the cached venv, "") once insightface imports there, else (None, why it could not install)."""
    python = VENV / "bin" / "python"
    if READY.exists():
        return python, ""
    base = shutil.which("python3")
    if base is None:
        return None, "no python3 on PATH to build the insightface venv with"
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    log = VENV.parent / "insightface-0.7.3-install.log"
    log.write_text("")
    constraints = VENV.parent / "insightface-0.7.3-constraints.txt"
    constraints.write_text("\n".join(PINS) + "\n")
    pip = [str(python), "-m", "pip", "install", "--quiet", "-c", str(constraints)]
    try:
        _run([base, "-m", "venv", str(VENV)], log)
        _run(pip + ["wheel", "setuptools", "cython", "numpy"], log)
        # setup.py imports numpy and Cython: build against the venv's numpy, not an isolated newer one
        _run(pip + ["--no-build-isolation", "insightface==0.7.3", "onnxruntime"], log)
        _run([str(python), "-c", "from insightface.utils import face_align"], log)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        tail = log.read_text().strip().splitlines()[-1:] or [str(err)]
        return None, f"insightface 0.7.3 did not install ({type(err).__name__}): {tail[0][:200]} (log: {log})"
    READY.write_text("ok\n")
    return python, ""


def norm_crop_reference(python: Path, image: np.ndarray, landmarks: np.ndarray, workdir: Path) -> np.ndarray:
    """insightface's `norm_crop(image, l)` for every (5, 2) landmark set `l` in `landmarks` (uint8 K x 112 x 112 x C)."""
    paths = [workdir / name for name in ("image.npy", "landmarks.npy", "crops.npy")]
    np.save(paths[0], image)
    np.save(paths[1], np.asarray(landmarks, dtype=np.float32))
    subprocess.run([str(python), "-c", _SCRIPT, *map(str, paths)], check=True, timeout=300,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    return np.load(paths[2])


if __name__ == "__main__":
    found, why = ensure_insightface()
    print(found or why)
    sys.exit(0 if found else 1)
