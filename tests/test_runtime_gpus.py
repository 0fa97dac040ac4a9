"""GPU leases outside a scheduler (fake GPU ids): disjoint sets for concurrent runs, freed when a holder dies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from faceflow.errors import FaceflowError
from faceflow.runtime.gpus import (Gpu, claim_gpus, lease_gpus, normalize_bus_id, parse_nvidia_smi, read_proc_gpus,
                                   try_lease)

FAKE = [Gpu(index, f"0000:{index + 1:02x}:00.0", f"GPU-fake-{index}") for index in range(4)]

# A run holding a lease: leases COUNT of the 4 fake GPUs, prints what it got, then sleeps until killed.
_HOLDER = """
import json, sys, time
from pathlib import Path
from faceflow.runtime.gpus import Gpu, lease_gpus
fake = [Gpu(i, f"0000:{i + 1:02x}:00.0", f"GPU-fake-{i}") for i in range(4)]
lease = lease_gpus(int(sys.argv[2]), fake, Path(sys.argv[1]), wait=float(sys.argv[3]), poll=0.2,
                   log=lambda text: print(text, file=sys.stderr, flush=True))
print(json.dumps(lease.environment()), flush=True)
time.sleep(600)
"""


def _holder(lock_dir: Path, count: int, wait: float = 0.0) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start a holder process; returns it with the environment its lease gives its workers."""
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock_dir), str(count), str(wait)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line, process.stderr.read()
    return process, json.loads(line)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_two_concurrent_runs_get_disjoint_gpus_and_a_third_is_refused_in_one_line(tmp_path):
    first, first_env = _holder(tmp_path, 2)
    second, second_env = _holder(tmp_path, 2)
    try:
        assert first_env == {"CUDA_VISIBLE_DEVICES": "GPU-fake-0,GPU-fake-1"}
        assert second_env == {"CUDA_VISIBLE_DEVICES": "GPU-fake-2,GPU-fake-3"}
        with pytest.raises(FaceflowError) as refused:
            lease_gpus(1, FAKE, tmp_path, wait=0)
        message = str(refused.value)
        assert "\n" not in message and message.startswith("this run needs 1 free GPU(s), 0 of 4 are free")
        assert f"GPU 0: pid {first.pid}" in message and f"GPU 3: pid {second.pid}" in message
        assert str(tmp_path) in message
    finally:
        _kill(first)
        _kill(second)


def test_a_killed_holder_frees_its_lease_and_a_waiting_run_takes_it(tmp_path):
    holder, _ = _holder(tmp_path, 4)
    assert try_lease(1, FAKE, tmp_path) is None
    waiter = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), "3", "120"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert waiter.stderr.readline().startswith("waiting: this run needs 3 free GPU(s), 0 of 4 are free")
        time.sleep(0.5)
        assert waiter.poll() is None  # still waiting: every GPU is leased
        _kill(holder)  # SIGKILL: no cleanup code runs, the kernel drops the locks
        line = waiter.stdout.readline()
        assert json.loads(line) == {"CUDA_VISIBLE_DEVICES": "GPU-fake-0,GPU-fake-1,GPU-fake-2"}
        with try_lease(1, FAKE, tmp_path) as lease:  # the fourth is free
            assert [gpu.index for gpu in lease.gpus] == [3]
    finally:
        _kill(waiter)


def test_release_gives_the_gpus_back_and_a_run_cannot_ask_for_more_than_the_machine_has(tmp_path):
    lease = try_lease(4, FAKE, tmp_path)
    assert try_lease(1, FAKE, tmp_path) is None
    lease.release()
    assert try_lease(4, FAKE, tmp_path) is not None
    with pytest.raises(FaceflowError, match=r"^this run needs 5 GPUs, this machine has 4$"):
        lease_gpus(5, FAKE, tmp_path)


def test_claim_sets_the_workers_devices_unless_a_scheduler_or_the_user_chose_them(tmp_path):
    messages: list[str] = []
    env = {"FACEFLOW_GPU_LOCK_DIR": str(tmp_path)}
    with claim_gpus("cuda", 2, env, FAKE, messages.append) as lease:
        assert env["CUDA_VISIBLE_DEVICES"] == "GPU-fake-0,GPU-fake-1" and len(lease.gpus) == 2
        assert messages == ["GPUs 0,1 leased for this run (CUDA_VISIBLE_DEVICES=GPU-fake-0,GPU-fake-1); "
                            "released when it ends"]
        auto_env = {"FACEFLOW_GPU_LOCK_DIR": str(tmp_path)}
        with claim_gpus("auto", 1, auto_env, FAKE, messages.append):
            assert auto_env["CUDA_VISIBLE_DEVICES"] == "GPU-fake-2"
    for assigned in ({"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": ""}, {"SLURM_JOB_GPUS": "0,1"},
                     {"SLURM_STEP_GPUS": "1"}):
        env = {"FACEFLOW_GPU_LOCK_DIR": str(tmp_path), **assigned}
        assert claim_gpus("cuda", 2, env, FAKE) is None and env == {"FACEFLOW_GPU_LOCK_DIR": str(tmp_path), **assigned}
    env = {"FACEFLOW_GPU_LOCK_DIR": str(tmp_path)}
    assert claim_gpus("cpu", 2, env, FAKE) is None and claim_gpus("cuda", 1, env, []) is None and len(env) == 1
    assert claim_gpus("cuda", 5, env, FAKE) is None and len(env) == 1  # too few GPUs: check_gpus refuses the run
    with pytest.raises(FaceflowError, match=r"^FACEFLOW_GPU_WAIT='soon': expected a number of seconds >= 0$"):
        claim_gpus("cuda", 1, {"FACEFLOW_GPU_LOCK_DIR": str(tmp_path), "FACEFLOW_GPU_WAIT": "soon"}, FAKE)


def test_gpus_are_found_from_nvidia_smi_or_the_drivers_proc_tree(tmp_path):
    smi = "0, 00000000:3B:00.0, GPU-aaaa\n1, 00000000:5E:00.0, GPU-bbbb\n"
    assert parse_nvidia_smi(smi) == [Gpu(0, "0000:3b:00.0", "GPU-aaaa"), Gpu(1, "0000:5e:00.0", "GPU-bbbb")]
    for bus, info in (("0000:5e:00.0", "Model: \t A100\nGPU UUID: \t GPU-bbbb\nBus Location: \t 0000:5e:00.0\n"),
                      ("0000:3b:00.0", "Model: \t A100\nGPU UUID: \t GPU-aaaa\n"),
                      ("0000:86:00.0", "Model: \t A100\n")):
        (tmp_path / bus).mkdir()
        (tmp_path / bus / "information").write_text(info)
    gpus = read_proc_gpus(tmp_path)
    assert gpus == [Gpu(0, "0000:3b:00.0", "GPU-aaaa"), Gpu(1, "0000:5e:00.0", "GPU-bbbb"), Gpu(2, "0000:86:00.0")]
    assert normalize_bus_id("00000000:3B:00.0") == gpus[0].bus_id  # one lock file, whichever tool found the GPU
    assert read_proc_gpus(tmp_path / "absent") == []
    with try_lease(3, gpus, tmp_path / "locks") as lease:  # no UUID for one: indices in PCI bus order
        assert lease.environment() == {"CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb,2", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_lock_directory_is_shared_by_every_user(tmp_path):
    folder = tmp_path / "locks"
    with try_lease(1, FAKE, folder):
        assert folder.stat().st_mode & 0o7777 == 0o1777
        lock = next(folder.iterdir())
        assert lock.stat().st_mode & 0o777 == 0o666 and lock.read_text().strip() == str(os.getpid())
