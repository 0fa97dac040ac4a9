"""Fine-tuning (`pretrained`, `freeze_backbone_steps`): the backbone starts from a faceflow checkpoint, a .pth,
an ONNX or an MXNet model; the head starts fresh; a frozen backbone does not move; the log says what was
loaded; an interrupted fine-tune resumes from its own checkpoints and never reads the pretrained file again."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from faceflow.runtime.flow import flow

from faceflow.checkpoint import list_checkpoints
from faceflow.errors import ConfigError
from faceflow.train.config import validate_config
from faceflow.train.engine import Trainer
from faceflow.export.model_files import model_format
from faceflow.train.pretrained import load_pretrained
from train_support import step_batches, tiny_config


def _tensors(path):
    return {k: v.numpy() for k, v in flow.load(str(path)).items()}


def test_fine_tune_freezes_then_trains_and_resumes_without_the_pretrained_file(tmp_path, capsys):
    source = tmp_path / "source"
    Trainer(tiny_config(), source, batches=step_batches).run()
    pretrained = tmp_path / "published" / "step_000006"
    shutil.copytree(source / "checkpoints" / "step_000006", pretrained)
    config = tiny_config(pretrained=str(pretrained), freeze_backbone_steps=2, num_classes=5, max_steps=4, seed=9)
    out = tmp_path / "fine"
    Trainer(config, out, batches=step_batches).run()
    log = capsys.readouterr().out
    assert f"backbone initialised from faceflow checkpoint {pretrained} (step 6)" in log
    assert "cosface head (5 classes) starts fresh" in log
    assert "backbone frozen until step 2: only the head trains" in log
    assert "step 2: backbone released, the whole network trains" in log
    start, frozen, trained = (_tensors(path / "backbone") for path in
                              (pretrained, out / "checkpoints" / "step_000002", out / "checkpoints" / "step_000004"))
    assert all(np.array_equal(start[k], frozen[k]) for k in start), "a frozen backbone moved"
    assert not np.allclose(start["conv_1.conv2d.weight"], trained["conv_1.conv2d.weight"])
    assert _tensors(out / "checkpoints" / "step_000002" / "head")["weight"].shape[0] == 5

    shutil.rmtree(out / "checkpoints" / "step_000004")
    (out / "train.json").unlink()
    shutil.rmtree(tmp_path / "published")  # a resume that read it again would fail
    resumed = Trainer(config, out, batches=step_batches)
    assert resumed.run() == 4 and len(resumed.losses) == 2
    log = capsys.readouterr().out
    assert f"resuming from {out / 'checkpoints' / 'step_000002'}" in log and "initialised" not in log
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2, 4]


def test_pretrained_formats_are_told_apart_and_mismatches_name_the_setting(tmp_path, torch_reference):
    work, _ = torch_reference
    (tmp_path / "m-symbol.json").write_text("{}")
    (tmp_path / "m-0003.params").write_bytes(b"")
    assert [model_format(str(p), "pretrained") for p in (work / "r18.pth", work / "r18_fold.onnx", tmp_path / "m",
                                                tmp_path / "m-0003.params")] == ["torch", "onnx", "mxnet", "mxnet"]
    with pytest.raises(ConfigError, match=r"pretrained: .*nothing\.pth: no such checkpoint directory"):
        model_format(str(tmp_path / "nothing.pth"), "pretrained")
    r18 = {"network": "r18", "embedding_size": 64, "network_kwargs": {}}
    loaded = load_pretrained(str(work / "r18.pth"), r18)
    assert loaded.description.startswith(f"arcface_torch state dict {work / 'r18.pth'}")
    assert loaded.state["pre_fc1.weight"].shape == (64, 25088)
    onnx = load_pretrained(str(work / "r18_fold.onnx"), r18)
    assert "embeddings match its runtime's" in onnx.description
    assert all(np.allclose(onnx.state[k], loaded.state[k], atol=1e-4) for k in ("stage1_unit1.bn1.weight", "pre_fc1.weight"))
    with pytest.raises(ConfigError, match=r"holds network_kwargs \{'trunk_scale': 2\} but the run has \{\}; "
                                          r"set network_kwargs: \{'trunk_scale': 2\}"):
        load_pretrained(str(work / "mbf.pth"), {"network": "mbf", "embedding_size": 64})
    with pytest.raises(ConfigError, match=r"holds embedding_size 64 but the run has 512"):
        load_pretrained(str(work / "r18.pth"), {**r18, "embedding_size": 512})


def test_freeze_needs_eager_mode():
    with pytest.raises(ConfigError, match="freeze_backbone_steps: needs graph: false"):
        validate_config(tiny_config(freeze_backbone_steps=2) | {"graph": True})
