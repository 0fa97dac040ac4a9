"""Face recognition backbones by name: `build_backbone('r50')`, `list_models()`.

One file per family (IResNet r18..r200 in `iresnet.py`, MobileFaceNet mbf in `mobilefacenet.py`), each
registering its names with `@register_model`; a family is imported when one of its backbones is built.
"""
from __future__ import annotations

from faceflow.models.registry import build_backbone, list_models, register_model

__all__ = ["build_backbone", "list_models", "register_model"]
