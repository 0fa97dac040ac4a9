"""scripts/gpu_check.sh stays runnable without a GPU to try it on: its syntax, its refusals, its configs."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from faceflow.train.config import load_config
from faceflow.train.rules import check_run

SCRIPT = REPO / "scripts" / "gpu_check.sh"
CONFIGS = sorted((REPO / "scripts" / "gpu_check").glob("*.yaml"))


def _run(tmp_path: Path, gpus: int | None, **env: str) -> subprocess.CompletedProcess:
    """The script with a fake `nvidia-smi -L` listing `gpus` GPUs first on PATH (None: no nvidia-smi at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if gpus is not None:
        listing = "".join(f"GPU {i}: NVIDIA A100 (UUID: GPU-fake-{i})\\n" for i in range(gpus))
        (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '{listing}'\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    path = f"{bin_dir}:/usr/bin:/bin"
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "work")], capture_output=True, text=True,
                          env={**base, "PATH": path, **env}, timeout=120)


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.parametrize("gpus,env,found", [(None, {}, None), (0, {}, "found 0"), (1, {}, "found 1"),
                                            (4, {"CUDA_VISIBLE_DEVICES": "3"}, "found 1"),
                                            (4, {"CUDA_VISIBLE_DEVICES": ""}, "found 0")])
def test_refuses_in_one_line_with_fewer_than_two_gpus(tmp_path, gpus, env, found):
    result = _run(tmp_path, gpus, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("gpu_check: needs 2 NVIDIA GPUs") and "nothing was run" in result.stderr
    assert (found or "nvidia-smi is not installed") in result.stderr
    assert not (tmp_path / "work").exists()


def test_with_two_gpus_it_goes_on_to_ask_oneflow(tmp_path):
    """Past the GPU count, OneFlow must see the GPUs too (here it sees none: refused before any work)."""
    result = _run(tmp_path, 2)
    assert result.returncode == 2 and "OneFlow sees 0 CUDA devices, 2 needed" in result.stderr, result.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_each_config_the_script_trains_is_valid(tmp_path, config):
    text = SCRIPT.read_text()
    assert f" {config.name} " in text or f" {config.name}\n" in text  # the script uses it
    overrides = [f"train_data={tmp_path}"]
    for steps in re.findall(rf"{re.escape(config.name)} --set max_steps=(\d+)", text):
        overrides.append(f"max_steps={steps}")
    loaded = load_config(str(config), overrides)
    check_run(loaded, loaded["nproc_per_node"], "cuda")  # what faceflow train refuses before starting workers
    assert loaded["device"] == "cuda" and loaded["fp16"] and loaded["nproc_per_node"] == 2
    assert loaded["checkpoint_every"] <= loaded["max_steps"]


def test_the_configs_cover_the_three_cuda_paths():
    loaded = {path.stem: load_config(str(path), ["train_data=x"]) for path in CONFIGS}
    assert len(loaded) == 3
    assert loaded["eager_pfc_fused"]["fc_mode"] == "partial_fc" and loaded["eager_pfc_fused"]["partial_fc_fused_sampler"]
    assert loaded["graph_model_parallel"]["graph"] and loaded["graph_model_parallel"]["fc_mode"] == "model_parallel"
    assert not loaded["overflow"]["graph"] and loaded["overflow"]["clip_grad_norm"]
    assert "FACEFLOW_FORCE_OVERFLOW=2:1" in SCRIPT.read_text()
