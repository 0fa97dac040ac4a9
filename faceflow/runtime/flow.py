"""The one place faceflow imports OneFlow: `from faceflow.runtime.flow import flow, nn`.

Only modules that train, embed or export import this; everything else (config checks, planning,
data conversion, the report) runs without OneFlow. On first import the pip cuDNN/cuBLAS libraries are
loaded (so the CUDA wheel imports on machines without a system CUDA) and OneFlow's start-up noise is
kept off the console.
"""
from __future__ import annotations

from faceflow.runtime.cuda_libs import load_cuda_libraries
from faceflow.runtime.quiet_import import import_oneflow

load_cuda_libraries()
flow = import_oneflow()
nn = flow.nn

__all__ = ["flow", "nn"]
