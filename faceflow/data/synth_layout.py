"""What the synthetic dataset's layout and sizes are, without drawing it: the IJB folder's name, the default
IJB identity count and the check of `faceflow synth`'s sizes. Its own module so that the workflow's planning
(Snakemake's interpreter, which has no numpy or PIL) reads them without the drawing code.
"""
from __future__ import annotations

from faceflow.errors import FaceflowError

IJB_DIR = "ijb"  # the IJB-style benchmarks, ijb/IJBC and ijb/IJBB
DEFAULT_IDENTITIES = 100


def check_arguments(num_classes: int, per_class: int, pairs: int, ijb_identities: int = DEFAULT_IDENTITIES) -> None:
    """Reject sizes the layout or the 10-fold protocol cannot use (FaceflowError naming the option)."""
    if num_classes < 2:
        raise FaceflowError(f"--classes: need at least 2 identities, got {num_classes}")
    if per_class < 1:
        raise FaceflowError(f"--per-class: need at least 1 image per identity, got {per_class}")
    if pairs < 20 or pairs % 2:
        raise FaceflowError(f"--pairs: need an even number >= 20 (10 folds, half same), got {pairs}")
    if ijb_identities != 0 and ijb_identities < 4:
        raise FaceflowError(f"--ijb-identities: need 0 (no IJB sets) or at least 4 (two per gallery), "
                            f"got {ijb_identities}")
