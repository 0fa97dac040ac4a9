"""Which GPUs a CUDA run's processes see: the ones a scheduler assigned, or ones leased on this machine.

The CPU-or-CUDA decision itself is `runtime/device.py`'s; this module runs before OneFlow is imported
(CUDA reads CUDA_VISIBLE_DEVICES once, when it starts) and does not import it. When SLURM (or the
user) has set CUDA_VISIBLE_DEVICES, or SLURM_JOB_GPUS / SLURM_STEP_GPUS, nothing is changed.
Otherwise nothing keeps two runs on one workstation off each other's GPUs, so `faceflow train` and
CUDA `faceflow validate` lease theirs: an exclusive `flock` on one file per GPU (named by its PCI bus
id) in a directory every faceflow run of the machine shares ($FACEFLOW_GPU_LOCK_DIR, default
/tmp/faceflow-gpu-leases). The run's top process holds the locks for the run's lifetime; the kernel
drops them when it exits, however it ends (SIGKILL included), so a lease never outlives its run.
CUDA_VISIBLE_DEVICES is then set to the leased GPUs' UUIDs for the run's processes.

With too few free GPUs a run waits, saying so once, and starts as soon as enough are free;
FACEFLOW_GPU_WAIT=SECONDS bounds the wait (0: fail at once with one line). GPUs used by programs
that are not faceflow runs are not seen. GPUs are found with `nvidia-smi`, else /proc/driver/nvidia/gpus.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, MutableMapping, Optional

from faceflow.errors import FaceflowError

LOCK_DIR_ENV = "FACEFLOW_GPU_LOCK_DIR"
WAIT_ENV = "FACEFLOW_GPU_WAIT"
DEFAULT_LOCK_DIR = Path("/tmp/faceflow-gpu-leases")
PROC_GPUS = Path("/proc/driver/nvidia/gpus")
SCHEDULER_ENV = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
NVIDIA_SMI = ("nvidia-smi", "--query-gpu=index,pci.bus_id,uuid", "--format=csv,noheader")


@dataclass(frozen=True)
class Gpu:
    """One GPU of this machine: its index in PCI bus order, PCI bus id and UUID (None if unknown)."""

    index: int
    bus_id: str
    uuid: Optional[str] = None

    @property
    def visible_name(self) -> str:
        """How CUDA_VISIBLE_DEVICES names it: the UUID (independent of CUDA's device order), else the index."""
        return self.uuid or str(self.index)


def normalize_bus_id(bus_id: str) -> str:
    """`00000000:01:00.0` (nvidia-smi) and `0000:01:00.0` (/proc) as one spelling: `0000:01:00.0`."""
    domain, sep, rest = bus_id.strip().lower().partition(":")
    try:
        return f"{int(domain, 16):04x}{sep}{rest}" if sep else bus_id.strip().lower()
    except ValueError:
        return bus_id.strip().lower()


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=index,pci.bus_id,uuid --format=csv,noheader` output."""
    gpus = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 3 and fields[0].isdigit():
            gpus.append(Gpu(int(fields[0]), normalize_bus_id(fields[1]), fields[2] or None))
    return sorted(gpus, key=lambda gpu: gpu.index)


def read_proc_gpus(root: Path = PROC_GPUS) -> list[Gpu]:
    """GPUs from the NVIDIA driver's /proc tree (one directory per PCI bus id; UUID from `information`)."""
    if not root.is_dir():
        return []
    gpus = []
    for index, folder in enumerate(sorted(root.iterdir(), key=lambda path: normalize_bus_id(path.name))):
        uuid = None
        try:
            for line in (folder / "information").read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "GPU UUID" and value.strip().startswith("GPU-"):
                    uuid = value.strip()
        except OSError:
            pass
        gpus.append(Gpu(index, normalize_bus_id(folder.name), uuid))
    return gpus


def discover_gpus() -> list[Gpu]:
    """This machine's NVIDIA GPUs (empty when there are none or the driver does not answer)."""
    try:
        result = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            found = parse_nvidia_smi(result.stdout)
            if found:
                return found
    except (OSError, subprocess.TimeoutExpired):
        pass
    return read_proc_gpus()


def scheduler_assigned(env: MutableMapping[str, str]) -> bool:
    """Whether a scheduler or the user already chose the run's GPUs."""
    return any(name in env for name in SCHEDULER_ENV)


def lock_dir(env: MutableMapping[str, str]) -> Path:
    """The lock directory shared by the faceflow runs of this machine."""
    return Path(env.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def wait_seconds(env: MutableMapping[str, str]) -> Optional[float]:
    """How long a run waits for free GPUs (None: until they are free)."""
    text = env.get(WAIT_ENV, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise FaceflowError(f"{WAIT_ENV}={text!r}: expected a number of seconds >= 0")
    return seconds


class GpuLease:
    """GPUs held by this process (an exclusive flock per GPU) until `release()` or the process ends."""

    def __init__(self, gpus: list[Gpu], fds: list[int]) -> None:
        self.gpus = gpus
        self._fds = fds

    def environment(self) -> dict[str, str]:
        """The variables that make a process see only the leased GPUs."""
        env = {"CUDA_VISIBLE_DEVICES": ",".join(gpu.visible_name for gpu in self.gpus)}
        if any(gpu.uuid is None for gpu in self.gpus):  # indices: in the PCI bus order they were counted in
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env

    def release(self) -> None:
        """Give the GPUs back (closing the lock files drops the locks)."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> "GpuLease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_lock(folder: Path, gpu: Gpu) -> int:
    """The lock file of `gpu`, opened (created readable and writable by every user of the machine)."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(folder, 0o1777)  # every user's runs create their lock files here
        except PermissionError:
            pass
    path = folder / f"gpu-{gpu.bus_id.replace(':', '_')}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's file that is not writable for us: locking needs no write access
        return os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o666)
    except PermissionError:
        pass
    return fd


def _holder(folder: Path, gpu: Gpu) -> str:
    """The pid recorded by the run holding `gpu` ('?' if unknown)."""
    try:
        return (folder / f"gpu-{gpu.bus_id.replace(':', '_')}.lock").read_text().strip() or "?"
    except OSError:
        return "?"


def try_lease(count: int, gpus: list[Gpu], folder: Path) -> Optional[GpuLease]:
    """Lease `count` of `gpus` (lowest indices first) without waiting, or None (holding nothing) if too few are free."""
    held: list[tuple[Gpu, int]] = []
    for gpu in gpus:
        if len(held) == count:
            break
        fd = _open_lock(folder, gpu)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((gpu, fd))
    if len(held) < count:
        for _, fd in held:
            os.close(fd)
        return None
    for _, fd in held:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # read-only lock file: the lease holds, only the pid is not recorded
            pass
    return GpuLease([gpu for gpu, _ in held], [fd for _, fd in held])


def lease_gpus(count: int, gpus: list[Gpu], folder: Path, wait: Optional[float] = None,
               log: Callable[[str], None] = print, poll: float = 2.0) -> GpuLease:
    """Lease `count` GPUs, waiting up to `wait` seconds (None: as long as it takes) for enough to be free."""
    if count > len(gpus):
        raise FaceflowError(f"this run needs {count} GPUs, this machine has {len(gpus)}")
    deadline = None if wait is None else time.monotonic() + wait
    announced = False
    while True:
        lease = try_lease(count, gpus, folder)
        if lease is not None:
            return lease
        busy = [gpu for gpu in gpus if not _is_free(folder, gpu)]
        holders = ", ".join(f"GPU {gpu.index}: pid {_holder(folder, gpu)}" for gpu in busy)
        state = (f"this run needs {count} free GPU(s), {len(gpus) - len(busy)} of {len(gpus)} are free "
                 f"(leased by other faceflow runs: {holders}; lock files in {folder})")
        if deadline is not None and time.monotonic() >= deadline:
            raise FaceflowError(f"{state}; wait for them, or set CUDA_VISIBLE_DEVICES to choose GPUs yourself")
        if not announced:
            log(f"waiting: {state}")
            announced = True
        time.sleep(poll)


def _is_free(folder: Path, gpu: Gpu) -> bool:
    """Whether no run holds `gpu` right now (a probe that takes and drops the lock at once)."""
    fd = _open_lock(folder, gpu)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def claim_gpus(device: str, count: int, env: MutableMapping[str, str] = os.environ,
               gpus: Optional[list[Gpu]] = None, log: Callable[[str], None] = print) -> Optional[GpuLease]:
    """For a run of `count` processes on this node on `device` (cpu | cuda | auto): lease its GPUs and set
    CUDA_VISIBLE_DEVICES in `env` (for this process and the ones it starts). None when there is nothing
    to do: a CPU run, GPUs chosen by the scheduler or the user, or fewer GPUs on this machine than `count`
    (`faceflow.train.rules.check_gpus` refuses that run)."""
    if device == "cpu" or scheduler_assigned(env):
        return None
    gpus = discover_gpus() if gpus is None else gpus
    if not 0 < count <= len(gpus):  # no GPU, or too few: the run's own checks refuse it once OneFlow runs
        return None
    if env is os.environ and "oneflow" in sys.modules:  # CUDA read CUDA_VISIBLE_DEVICES when OneFlow loaded
        log("note: GPUs not leased: OneFlow is already loaded in this process, which sees every GPU")
        return None
    lease = lease_gpus(count, gpus, lock_dir(env), wait_seconds(env), log)
    env.update(lease.environment())
    log(f"GPUs {','.join(str(gpu.index) for gpu in lease.gpus)} leased for this run "
        f"(CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}); released when it ends")
    return lease


__all__ = ["Gpu", "GpuLease", "claim_gpus", "discover_gpus", "lease_gpus", "parse_nvidia_smi", "read_proc_gpus",
           "scheduler_assigned", "try_lease"]
