"""Process setup: OneFlow loads (with its CUDA libraries, quietly) only through faceflow.runtime.flow; the CLI dispatches."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_runtime_flow_loads_cuda_libraries_and_oneflow_works() -> None:
    proc = _run(
        "import faceflow, sys\n"
        "assert 'oneflow' not in sys.modules\n"
        "from faceflow.runtime.cuda_libs import load_cuda_libraries\n"
        "from faceflow.runtime.flow import flow\n"
        "libs = load_cuda_libraries()\n"
        "assert any('libcudnn.so' in p for p in libs), libs\n"
        "assert any('libcublas.so' in p for p in libs), libs\n"
        "print(float(flow.ones(3).sum()))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3.0"


def test_oneflow_startup_noise_is_hidden() -> None:
    proc = _run(
        "from faceflow.runtime.flow import flow\n"
        "class G(flow.nn.Graph):\n"
        "    def __init__(self, m):\n        super().__init__()\n        self.m = m\n"
        "    def build(self, x):\n        return self.m(x)\n"
        "G(flow.nn.Linear(3, 2))(flow.ones(2, 3))\n"
    )
    assert proc.returncode == 0, proc.stderr
    combined = proc.stdout + proc.stderr
    assert "libibverbs" not in combined
    assert "CUDA driver version is insufficient" not in combined
    assert len([line for line in combined.splitlines() if line.strip()]) <= 1


def test_cpu_device_resolution() -> None:
    proc = _run(
        "from faceflow.runtime.device import resolve_device\n"
        "print(resolve_device('cpu'), resolve_device('auto'))\n"
        "try:\n    resolve_device('tpu')\nexcept ValueError as e:\n    print('ERR', e)\n"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "cpu cpu"
    assert lines[1].startswith("ERR device:")


def test_cli_lists_commands_and_rejects_unknown() -> None:
    ok = subprocess.run([sys.executable, "-m", "faceflow.cli.main", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0
    for command in ("synth", "convert", "train", "validate", "export", "report"):
        assert f"  {command}" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "faceflow.cli.main", "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown command 'frobnicate'" in bad.stderr


def test_find_python310_script_names_interpreter() -> None:
    proc = subprocess.run(["bash", str(REPO / "scripts/find-python310.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    version = subprocess.run([proc.stdout.strip(), "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("Python 3.10")


def test_find_python310_fails_clearly_without_interpreter(tmp_path) -> None:
    if any((Path(d) / "python3.10").exists() for d in ("/usr/bin", "/usr/local/bin")):
        pytest.skip("a system-wide python3.10 exists here, so the missing-interpreter path cannot be provoked")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(REPO / "scripts/find-python310.sh")], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "no working python3.10 interpreter found" in proc.stderr
