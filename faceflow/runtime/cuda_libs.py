"""Load the pip-installed cuDNN 8 / cuBLAS 11 libraries so that the oneflow wheel imports without a GPU.

The CUDA 11.7 oneflow wheel links against these sonames; on a machine without a system CUDA
toolkit the dynamic loader cannot find them, so we dlopen them with RTLD_GLOBAL first.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sysconfig

# Load order matters: cublasLt before cublas, cudnn's sub-libraries before the umbrella library.
_LIBRARY_PATTERNS = (
    ("cublas", "libcublasLt.so.*"),
    ("cublas", "libcublas.so.*"),
    ("cuda_nvrtc", "libnvrtc.so.*"),
    ("cudnn", "libcudnn_ops_infer.so.*"),
    ("cudnn", "libcudnn_ops_train.so.*"),
    ("cudnn", "libcudnn_cnn_infer.so.*"),
    ("cudnn", "libcudnn_cnn_train.so.*"),
    ("cudnn", "libcudnn_adv_infer.so.*"),
    ("cudnn", "libcudnn_adv_train.so.*"),
    ("cudnn", "libcudnn.so.*"),
)

_loaded: list[str] = []


def nvidia_lib_dirs() -> list[str]:
    """Directories of the `nvidia-*` pip packages in the running interpreter's site-packages."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return sorted({os.path.join(root, "nvidia") for root in roots if os.path.isdir(os.path.join(root, "nvidia"))})


def load_cuda_libraries() -> list[str]:
    """dlopen cuBLAS/cuDNN from the pip wheels (idempotent); returns the paths loaded."""
    if _loaded:
        return list(_loaded)
    for base in nvidia_lib_dirs():
        for package, pattern in _LIBRARY_PATTERNS:
            for path in sorted(glob.glob(os.path.join(base, package, "lib", pattern))):
                if "builtins" in os.path.basename(path):
                    continue
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    continue
                _loaded.append(path)
    return list(_loaded)
