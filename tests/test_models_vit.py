"""ViT backbones: parameter counts (closed form, pinned, and PyTorch's for arcface_torch's layout), patch masking
and drop path, training eager and in nn.Graph, ONNX export with parity, and `faceflow import torch` of a ViT
state dict written by PyTorch itself."""
from __future__ import annotations

import json

import numpy as np
import pytest

from faceflow.runtime.flow import flow, nn

from export_samples import random_backbone
from faceflow.checkpoint import load_backbone
from faceflow.cli.main import main as faceflow_main
from faceflow.errors import ConfigError
from faceflow.export.onnx_export import export_onnx
from faceflow.export.parity import MIN_COSINE, compare, drawn_faces, normalised_nchw, oneflow_embeddings
from faceflow.models import build_backbone
from faceflow.models.vit import NUM_PATCHES, DropPath
from train_support import step_batches, tiny_config

SHAPES = {"vit_t": (256, 12), "vit_s": (512, 12), "vit_b": (512, 24), "vit_l": (768, 24)}  # REFERENCE section 13
PINNED = {"vit_t": 19_137_792, "vit_s": 76_023_296, "vit_b": 113_833_472, "vit_l": 255_684_352}  # embedding 512
TINY_VIT = {"width": 32, "depth": 2, "num_heads": 4}


def vit_closed_form(width: int, depth: int, emb: int) -> int:
    """arcface_torch's ViT written out: patch conv, position embedding, mask token, blocks (2 LayerNorms, qkv
    without bias, proj, 4x MLP), final LayerNorm, feature head Linear-BN-Linear-BN (no Linear biases)."""
    d = width
    block = 2 * d + 3 * d * d + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    return ((3 * 81 * d + d) + NUM_PATCHES * d + d + depth * block + 2 * d
            + NUM_PATCHES * d * d + 2 * d + d * emb + 2 * emb)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_vit_parameter_count_is_pinned_and_closed_form(name: str) -> None:
    width, depth = SHAPES[name]
    assert _count(build_backbone(name, 512)) == vit_closed_form(width, depth, 512) == PINNED[name]


def test_vit_parameter_counts_equal_pytorchs_for_arcface_torch_layout() -> None:
    from torch_venv import reference_models

    spec = {"counts": "counts.json", "vit": {name: list(shape) for name, shape in SHAPES.items()}, "embedding_size": 512}
    work = reference_models([spec], np.zeros((1, 3, 112, 112), np.float32))
    assert json.loads((work / "counts.json").read_text()) == PINNED


def test_vit_options_and_bad_values() -> None:
    model = build_backbone("vit_t", 64, **TINY_VIT)
    assert len(model.blocks) == 2 and model.pos_embed.shape == (1, 144, 32)
    assert [block.drop_path.rate for block in model.blocks] == pytest.approx([0.0, 0.1])
    for kwargs, key in (({"width": 30, "num_heads": 4}, "width"), ({"depth": 0}, "depth"),
                        ({"mask_ratio": 1.0}, "mask_ratio"), ({"drop_path": -0.1}, "drop_path")):
        with pytest.raises(ConfigError, match=f"^{key}:"):
            build_backbone("vit_t", 64, **kwargs)


def test_patch_masking_keeps_tokens_in_place_and_fills_the_rest_with_the_mask_token() -> None:
    model = build_backbone("vit_t", 16, **TINY_VIT, mask_ratio=0.25)
    x = flow.tensor(np.random.default_rng(0).normal(size=(3, NUM_PATCHES, 32)).astype(np.float32))
    kept, restore = model._masked(x)
    assert tuple(kept.shape) == (3, int(NUM_PATCHES * 0.75), 32)
    refilled = model._refilled(kept, restore).numpy()
    token = model.mask_token.numpy().reshape(-1)
    original = x.numpy()
    same = np.all(refilled == original, axis=2)
    filled = np.all(refilled == token, axis=2)
    assert np.all(same | filled) and np.all(same.sum(axis=1) == kept.shape[1])
    assert not np.array_equal(same[0], same[1])  # each sample drops its own tokens


def test_masking_and_drop_path_act_in_training_only() -> None:
    flow.manual_seed(0)
    model = random_backbone("vit_t", 16, seed=2, **TINY_VIT)
    x = flow.tensor(normalised_nchw(drawn_faces(4, seed=1)))
    with flow.no_grad():
        first, second = model(x).numpy(), model(x).numpy()
        assert np.array_equal(first, second)
        model.train()
        noisy = model(x).numpy()
    assert not np.allclose(noisy, first, atol=1e-3)
    drop = DropPath(0.5).train()
    ones = flow.ones(64, 2, 3)
    values = np.unique(drop(ones).numpy())
    assert set(values.tolist()) == {0.0, 2.0}
    assert np.array_equal(drop.eval()(ones).numpy(), ones.numpy())


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_tiny_vit_trains_eager_and_in_graph(tmp_path, graph: bool) -> None:
    """The engine on vit_t shrunk through network_kwargs: finite losses that fall on a fixed batch."""
    from faceflow.train.engine import Trainer

    def same_batch(config, placement, start):
        batches = step_batches(config, placement, 0)
        batch = next(batches)
        while True:
            yield batch

    config = tiny_config(network="vit_t", embedding_size=16, network_kwargs=TINY_VIT, graph=graph, max_steps=8,
                         lr_steps=[], scales=[], warmup_steps=0, lr=0.05, checkpoint_every=8)
    trainer = Trainer(config, tmp_path / "run", batches=same_batch)
    assert trainer.run() == 8
    losses = trainer.losses
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    model, saved, step = load_backbone(tmp_path / "run" / "checkpoints" / "step_000008")
    assert (saved["network"], saved["network_kwargs"], step) == ("vit_t", TINY_VIT, 8)


def test_vit_onnx_export_matches_oneflow_with_dynamic_batch(tmp_path) -> None:
    from export_samples import check_onnx_model

    model = random_backbone("vit_t", 32, seed=1, **TINY_VIT)
    images = drawn_faces(5, seed=3)
    out = tmp_path / "vit.onnx"
    parity = export_onnx(model, out, images)
    assert parity.images == 5 and parity.min_cosine >= MIN_COSINE and parity.passed
    check_onnx_model(out, model, images, 32)


def test_vit_state_dict_from_pytorch_imports_with_its_embeddings(tmp_path, capsys) -> None:
    from torch_venv import reference_models

    faces = drawn_faces(3, seed=5)
    spec = {"network": "vit", "width": 64, "depth": 2, "embedding_size": 48, "seed": 6, "pth": "vit.pth",
            "embeddings": "vit.npy"}
    work = reference_models([spec], normalised_nchw(faces))
    out = tmp_path / "imported" / "step_000000"
    assert faceflow_main(["import", "torch", str(work / "vit.pth"), str(out), "--network", "vit_t"]) == 0
    assert "as vit_t" in capsys.readouterr().out
    model, config, _ = load_backbone(out)
    assert (config["network"], config["embedding_size"], config["network_kwargs"]) == \
        ("vit_t", 48, {"width": 64, "depth": 2})
    parity = compare(np.load(work / "vit.npy"), oneflow_embeddings(model, normalised_nchw(faces)))
    assert parity.min_cosine >= 0.9999 and parity.min_cosine >= MIN_COSINE, parity
    assert faceflow_main(["import", "torch", str(work / "vit.pth"), str(out.parent / "r"), "--network", "r18"]) == 1
    assert "use --network vit_t" in capsys.readouterr().err
