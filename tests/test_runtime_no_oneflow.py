"""Planning the workflow, checking configs, converting data and building the report never load OneFlow."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Each stage runs in a fresh interpreter in which importing oneflow fails; at the end neither oneflow nor
# the CUDA libraries may be loaded.
_GUARD = """
import sys
class _NoOneFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "oneflow" or name.startswith("oneflow."):
            raise ImportError(f"{name} imported by a stage that must not need it")
        return None
sys.meta_path.insert(0, _NoOneFlow())
"""
_CHECK = """
assert "oneflow" not in sys.modules
maps = open("/proc/self/maps").read()
assert "libcudnn" not in maps and "libcublas" not in maps, "CUDA libraries loaded"
"""


def _run_guarded(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _GUARD + code + _CHECK], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_import_faceflow_and_the_cli_dispatcher_load_no_oneflow() -> None:
    proc = _run_guarded("import faceflow, faceflow.cli.main\nprint(faceflow.__version__)\n", REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_gpu_leases_are_settled_before_oneflow_loads() -> None:
    """`faceflow train` and `faceflow validate` choose the GPUs a CUDA run sees before OneFlow starts CUDA."""
    proc = _run_guarded("import faceflow.cli.train, faceflow.cli.validate\n"
                        "from faceflow.runtime.gpus import claim_gpus\n"
                        "print(claim_gpus('cpu', 1), claim_gpus('auto', 1, {'CUDA_VISIBLE_DEVICES': '0'}))\n", REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "None"]


def test_planning_and_config_checks_run_without_oneflow() -> None:
    proc = _run_guarded(
        "import yaml\n"
        "from faceflow.workflow.session import load_plan\n"
        "from faceflow.train.config import load_config\n"
        "plan = load_plan('.', yaml.safe_load(open('config/config.yaml')))\n"
        "assert plan.runs and plan.validation_steps(next(iter(plan.runs)))\n"
        "for name in ('demo', 'emore_r100_arcface', 'glint360k_r100_cosface_pfc'):\n"
        "    load_config(name, ['train_data=x'])\n"
        "print(len(plan.runs))\n", REPO)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 1


def test_synth_convert_and_report_run_without_oneflow(tmp_path: Path) -> None:
    proc = _run_guarded(
        "import json, sys\n"
        "from pathlib import Path\n"
        "from faceflow.cli.main import main\n"
        "assert main(['synth', 'data', '--classes', '4', '--per-class', '3', '--pairs', '20']) == 0\n"
        "assert main(['convert', 'rec', 'data', 'of', '--parts', '2', '--shuffle']) == 0\n"
        "assert main(['convert', 'bin', 'data/lfw.bin', 'val']) == 0\n"
        "step = Path('results/runs/r/validation/step_000010'); step.mkdir(parents=True)\n"
        "(step / 'lfw.json').write_text(json.dumps({'benchmark': 'lfw', 'step': 10, 'accuracy': 0.9,\n"
        "    'accuracy_std': 0.01, 'threshold': 1.0, 'xnorm': 20.0, 'checkpoint': 'x'}))\n"
        "assert main(['report', 'results', '--out', 'results/report']) == 0\n"
        "assert sorted(p.name for p in Path('of').glob('part-*')) == ['part-00000', 'part-00001']\n"
        "assert Path('results/report/report.html').is_file()\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
