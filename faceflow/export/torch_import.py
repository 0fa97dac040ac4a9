"""Import an arcface_torch backbone state dict (`backbone.pth`, `model.pt`) as a faceflow backbone.

The file is read without PyTorch (`torch_pickle`), keys are matched by name (`torch_names`), BatchNorm eps
1e-5 is absorbed into the running statistics and MobileFaceNet's trained embedding-BN gamma into faceflow's
frozen-gamma `fc1`. arcface_torch feeds `(x / 255 - 0.5) / 0.5`, which is faceflow's `(x - 127.5) / 127.5`,
so no input scaling is folded.
"""
from __future__ import annotations

import os
from typing import Any

from faceflow.runtime.flow import nn

from faceflow.errors import FaceflowError
from faceflow.export.imported_state import conform_batchnorm, fill_state, load_state, model_state, write_checked_import
from faceflow.export.torch_names import LAYOUTS, recognise, torch_key
from faceflow.export.torch_pickle import read_state_dict

_COUNTER = "num_batches_tracked"


def import_torch(path: str | os.PathLike, network: str,
                 embedding_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build faceflow backbone `network` holding the state dict's weights; return (module in eval mode, config)."""
    from faceflow.models import build_backbone

    if network not in LAYOUTS:
        raise FaceflowError(f"--network: no arcface_torch layout for {network!r} (known: {', '.join(LAYOUTS)})")
    layout = LAYOUTS[network]
    state = read_state_dict(path)
    found = recognise(state)
    hint = (f"its keys are those of {found[0]}: use --network {found[0]}" if found and found[0] != network
            else "is --network right?")
    kwargs = found[1] if found and found[0] == network else {}
    if embedding_size is None:
        if layout.embedding_key not in state:
            raise FaceflowError(f"{path}: no {layout.embedding_key} to read the embedding size from ({hint}); "
                                f"pass --embedding-size")
        embedding_size = int(state[layout.embedding_key].shape[0])
    model = build_backbone(network, embedding_size=embedding_size, **kwargs)
    expected = {key: torch_key(layout, key) for key in model_state(model) if not key.endswith(_COUNTER)}
    source = {key: value for key, value in state.items() if not key.endswith(_COUNTER)}
    values = fill_state(model, network, expected, source, str(path), hint, layout.absent)
    conform_batchnorm(model, values, lambda _path: layout.bn_eps)
    load_state(model, values)
    config: dict[str, Any] = {"network": network, "embedding_size": int(embedding_size)}
    if kwargs:
        config["network_kwargs"] = kwargs
    config["imported_from"] = str(path)
    return model, config


def import_torch_checkpoint(path: str | os.PathLike, network: str, out: str | os.PathLike,
                            embedding_size: int | None = None) -> dict[str, Any]:
    """Import and write the checkpoint `out`; return its config (PyTorch is not here to compare with)."""
    model, config = import_torch(path, network, embedding_size)
    write_checked_import(model, config, out, None, None, {"epoch": 0})
    return config
