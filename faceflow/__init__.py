"""faceflow: InsightFace-style face recognition training on OneFlow, run as a Snakemake workflow.

Importing faceflow loads nothing heavy: OneFlow (and the CUDA libraries it needs) is imported on first
use by the modules that train, embed or export, through `faceflow.runtime.flow`.
"""
from __future__ import annotations

__version__ = "0.1.0"
