"""What every importer (MXNet, PyTorch, ONNX) shares: a faceflow backbone state filled from another
framework's tensors with errors that name the source key, BatchNorm conventions conformed (eps, the
frozen-gamma embedding BN), an input normalisation folded into the first convolution, and the checked
checkpoint written atomically."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from faceflow.runtime.flow import flow, nn

from faceflow.checkpoint import write_checkpoint_dir
from faceflow.errors import FaceflowError
from faceflow.export.batchnorm_fold import shift_eps, unit_gamma_head
from faceflow.export.mxnet_names import BATCHNORM_TYPES
from faceflow.export.parity import Parity, compare, normalised_nchw, oneflow_embeddings, require

FACEFLOW_MEAN = 127.5
FACEFLOW_SCALE = 1.0 / 127.5
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def model_state(model: nn.Module) -> dict[str, np.ndarray]:
    """The backbone's state dict as float32 NumPy arrays (what importers overwrite)."""
    return {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}


def fill_state(model: nn.Module, network: str, expected: Mapping[str, str], source: Mapping[str, np.ndarray],
               where: str, hint: str = "is --network right?", zero_if_absent: frozenset[str] = frozenset()
               ) -> dict[str, np.ndarray]:
    """faceflow state with every key of `expected` (faceflow key -> source key) taken from `source`.

    Shapes must match (a PReLU slope may come as C x 1 x 1); keys in `zero_if_absent` (a bias the source
    layer does not have) become zeros when absent. Every source key must be used: a missing, surplus or
    misshapen tensor is a one-line error naming the source key and ending with `hint`.
    """
    state = model_state(model)
    embedding = state["pre_fc1.weight"].shape[0] if "pre_fc1.weight" in state else "?"
    for key, source_key in expected.items():
        want = tuple(state[key].shape)
        if source_key not in source:
            if key in zero_if_absent:
                state[key] = np.zeros(want, np.float32)
                continue
            raise FaceflowError(f"{where}: network {network} needs {source_key} {want}, which the file lacks ({hint})")
        value = np.asarray(source[source_key])
        if tuple(value.shape) != want and len(want) == 1 and value.size == want[0] and value.ndim == 3:
            value = value.reshape(want)
        if tuple(value.shape) != want:
            raise FaceflowError(f"{where}: {source_key} has shape {tuple(value.shape)} but network {network} with "
                                f"embedding_size {embedding} expects {want} ({hint})")
        state[key] = value.astype(np.float32)
    unused = [k for k in source if k not in set(expected.values())]
    if unused:
        raise FaceflowError(f"{where}: {unused[0]} has no place in network {network} ({len(unused)} unused; {hint})")
    return state


def conform_batchnorm(model: nn.Module, state: dict[str, np.ndarray], source_eps: Callable[[str], float]) -> None:
    """Rewrite BN statistics so faceflow's eps gives the source's output (`source_eps(module path)`), and fold
    a trained gamma of the frozen-gamma embedding BN `fc1` into its statistics and `pre_fc1`."""
    for path, module in model.named_modules():
        if isinstance(module, BATCHNORM_TYPES):
            key = f"{path}.running_var"
            state[key] = shift_eps(state[key], source_eps(path), float(module.eps))
    fc1 = getattr(model, "fc1", None)
    if fc1 is not None and not fc1.weight.requires_grad:
        unit_gamma_head(state, float(fc1.eps))


def input_scale(a: float, b: float, where: str) -> float:
    """Scale of a source's `a * x + b` input normalisation (x raw 0..255) relative to faceflow's (x-127.5)/127.5.

    The first convolution's weights times this scale take faceflow's input; a normalisation that does not
    subtract 127.5 cannot be folded that way and is refused.
    """
    offset = FACEFLOW_MEAN * a + b  # a*x + b with x = 127.5 u + 127.5 (u: faceflow input)
    if abs(offset) > 1e-4 * max(1.0, abs(b)):
        raise FaceflowError(f"{where}: input normalisation a*x+b with a={a:g}, b={b:g} does not subtract "
                            f"{FACEFLOW_MEAN}; it cannot be folded into faceflow's (x-127.5)/127.5 input")
    return a / FACEFLOW_SCALE


def load_state(model: nn.Module, state: Mapping[str, Any]) -> nn.Module:
    """Load NumPy `state` into `model` (eval mode) and return it."""
    model.load_state_dict({k: flow.tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()})
    return model.eval()


def write_imported_checkpoint(model: nn.Module, config: dict[str, Any], out: str | os.PathLike,
                              state: dict[str, Any]) -> Path:
    """Write `model` as the faceflow checkpoint directory `out` (atomically, through `write_checkpoint_dir`)."""
    out = Path(out)
    match = _STEP_DIR.match(out.name)
    step = int(match.group(1)) if match else 0
    return write_checkpoint_dir(out, step, config, state,
                                lambda tmp: flow.save(model.state_dict(), str(tmp / "backbone")))


def write_checked_import(model: nn.Module, config: dict[str, Any], out: str | os.PathLike, images: np.ndarray,
                         reference: Callable[[np.ndarray], np.ndarray] | None, state: dict[str, Any]) -> Parity | None:
    """Check the imported backbone's embeddings against `reference(images)` (the source runtime's, None when
    that runtime is not available here), then write the checkpoint `out` recording the figures."""
    parity = None
    if reference is not None:
        parity = require(compare(reference(images), oneflow_embeddings(model, normalised_nchw(images))),
                         f"{out} (import of {config['imported_from']})")
    write_imported_checkpoint(model, config, out, {"world_size": 1, **state,
                                                   "imported": parity.as_dict() if parity else None})
    return parity
