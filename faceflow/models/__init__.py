"""Face recognition backbones by name: `build_backbone('r50')`, `list_models()`.

Importing this package registers every family (IResNet r18..r200, MobileFaceNet mbf).
"""
from __future__ import annotations

from faceflow.models import iresnet, mobilefacenet  # noqa: F401  (registers the families)
from faceflow.models.registry import build_backbone, list_models, register_model

__all__ = ["build_backbone", "list_models", "register_model"]
