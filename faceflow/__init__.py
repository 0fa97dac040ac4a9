"""faceflow: InsightFace-style face recognition training on OneFlow.

Importing faceflow makes `import oneflow` work on machines without a GPU or system CUDA: the pip
cuDNN/cuBLAS libraries are loaded first and OneFlow's start-up noise is kept off the console.
Set FACEFLOW_LAZY_ONEFLOW=1 to skip the OneFlow import (pure-data commands do this).
"""
from __future__ import annotations

import os

from faceflow.runtime.cuda_libs import load_cuda_libraries

__version__ = "0.1.0"

load_cuda_libraries()
if os.environ.get("FACEFLOW_LAZY_ONEFLOW") != "1":
    from faceflow.runtime.quiet_import import import_oneflow

    import_oneflow()
