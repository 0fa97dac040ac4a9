"""Import OneFlow without its start-up noise (ibverbs notice, 'CUDA driver insufficient' warning)."""
from __future__ import annotations

import os
import sys
import tempfile
from types import ModuleType

_NOISE = (
    "libibverbs not available",
    "CUDA driver version is insufficient",
    "cuda_device_descriptor_class",
)


def _capture_fds() -> tuple[list[int], "tempfile._TemporaryFileWrapper[bytes]"]:
    sys.stdout.flush()
    sys.stderr.flush()
    sink = tempfile.TemporaryFile()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)
    return saved, sink


def _restore_fds(saved: list[int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for fd in saved:
        os.close(fd)


def import_oneflow() -> ModuleType:
    """Import oneflow once, hiding the known start-up noise and passing anything else to stderr."""
    if "oneflow" in sys.modules:
        return sys.modules["oneflow"]
    # OneFlow raises real failures as Python exceptions; its glog ERROR lines on a GPU-less machine are
    # the CUDA driver probes of nn.Graph compilation, so only FATAL is kept unless the user says otherwise.
    os.environ.setdefault("GLOG_minloglevel", "3")
    saved, sink = _capture_fds()
    try:
        import oneflow
    finally:
        _restore_fds(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
        sink.close()
    for line in text.splitlines():
        if line.strip() and not any(marker in line for marker in _NOISE):
            print(line, file=sys.stderr)
    return oneflow
