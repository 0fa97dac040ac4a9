"""`faceflow import torch`: arcface_torch state dicts written by PyTorch itself (IResNet r18/r50, MobileFaceNet,
zip and legacy formats) give faceflow checkpoints with PyTorch's embeddings; wrong networks and shapes are
one-line errors naming the key; pickles asking for anything but tensors are refused and nothing runs."""
from __future__ import annotations

import io
import pickle
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from cli_support import one_line_error
from faceflow.checkpoint import load_backbone
from faceflow.cli.main import main as faceflow_main
from faceflow.errors import DataFormatError
from faceflow.export.parity import MIN_COSINE, compare, normalised_nchw, oneflow_embeddings
from faceflow.export.torch_import import import_torch
from faceflow.export.torch_pickle import read_state_dict, read_torch_file


@pytest.mark.parametrize("name,network,kwargs", [("r18", "r18", None), ("mbf", "mbf", {"trunk_scale": 2}),
                                                  ("mbf_tiny", "mbf", {"trunk_scale": 1, "blocks": [1, 1, 1, 1]})])
def test_imported_backbone_gives_pytorchs_embeddings(torch_reference, tmp_path, capsys, name, network, kwargs):
    work, faces = torch_reference
    out = tmp_path / "imported" / "step_000000"
    assert faceflow_main(["import", "torch", str(work / f"{name}.pth"), str(out), "--network", network]) == 0
    assert f"as {network}" in capsys.readouterr().out
    model, config, step = load_backbone(out)
    assert (config["network"], config["embedding_size"], config.get("network_kwargs"), step) == (network, 64, kwargs, 0)
    parity = compare(np.load(work / f"{name}.npy"), oneflow_embeddings(model, normalised_nchw(faces)))
    assert parity.min_cosine >= MIN_COSINE, parity
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_r50_import_gives_pytorchs_embeddings(torch_reference):
    work, faces = torch_reference
    model, config = import_torch(work / "r50.pth", "r50")
    parity = compare(np.load(work / "r50.npy"), oneflow_embeddings(model, normalised_nchw(faces)))
    assert parity.min_cosine >= MIN_COSINE, parity


def test_legacy_format_and_training_checkpoint_wrapper_read_like_the_zip(torch_reference):
    work, _ = torch_reference
    zipped, legacy = read_state_dict(work / "r18.pth"), read_state_dict(work / "r18_legacy.pth")
    assert not zipfile.is_zipfile(work / "r18_legacy.pth")
    assert list(zipped) == list(legacy) and "layer4.1.bn3.running_var" in zipped
    assert all(np.array_equal(zipped[k], legacy[k]) and zipped[k].dtype == legacy[k].dtype for k in zipped)
    assert legacy["bn1.num_batches_tracked"].dtype == np.int64
    assert read_torch_file(work / "r18_legacy.pth")["epoch"] == 3


def test_wrong_network_or_embedding_size_names_the_key(torch_reference, tmp_path, capsys):
    work, _ = torch_reference
    out = tmp_path / "out" / "step_000000"
    assert faceflow_main(["import", "torch", str(work / "r18.pth"), str(out), "--network", "r34"]) == 1
    err = one_line_error(capsys)
    assert "layer1.2.bn1.weight" in err and "use --network r18" in err
    assert faceflow_main(["import", "torch", str(work / "mbf.pth"), str(out), "--network", "r50"]) == 1
    assert "use --network mbf" in one_line_error(capsys)
    assert faceflow_main(["import", "torch", str(work / "r18.pth"), str(out), "--network", "mbf"]) == 1
    assert "use --network r18" in one_line_error(capsys)
    assert faceflow_main(["import", "torch", str(work / "r18.pth"), str(out), "--network", "r18",
                          "--embedding-size", "32"]) == 1
    err = one_line_error(capsys)
    assert "fc.weight has shape (64, 25088)" in err and "(32, 25088)" in err
    assert not out.exists()


# Files in PyTorch's documented layout written here without PyTorch: stand-in `torch` modules make pickle
# emit the globals torch.save emits, so the reader's refusals can be tested on exact, hostile variants.

def _fake_torch(monkeypatch):
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: only pickled")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storages = {}
    for name in ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage"):
        storages[name] = type(name, (), {"__module__": "torch"})
        setattr(torch, name, storages[name])
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return _rebuild_tensor_v2, storages


class _Tensor:
    def __init__(self, rebuild, storage_id, offset, size, stride):
        self.args = (rebuild, (storage_id, offset, size, stride, False, OrderedDict()))

    def __reduce__(self):
        return self.args


def _zip_file(path, obj, storages: dict[str, bytes], storage_ids: dict) -> None:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda o: storage_ids.get(id(o))
    pickler.dump(obj)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)


def test_documented_format_read_without_torch_views_and_dtypes(tmp_path, monkeypatch):
    rebuild, types_ = _fake_torch(monkeypatch)
    base = np.arange(12, dtype=np.float32)
    half = np.array([1.5, -2.0], np.float16)
    bf16 = (np.array([3.0, -0.5], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    ids, markers = {}, {}
    for key, (type_name, count) in {"0": ("FloatStorage", 12), "1": ("HalfStorage", 2), "2": ("BFloat16Storage", 2)}.items():
        markers[key] = object()
        ids[id(markers[key])] = ("storage", types_[type_name], key, "cpu", count)
    state = OrderedDict([
        ("w", _Tensor(rebuild, markers["0"], 0, (3, 4), (4, 1))),
        ("transposed", _Tensor(rebuild, markers["0"], 1, (2, 3), (1, 4))),
        ("h", _Tensor(rebuild, markers["1"], 0, (2,), (1,))),
        ("b", _Tensor(rebuild, markers["2"], 0, (2,), (1,)))])
    _zip_file(tmp_path / "ok.pth", state, {"0": base.tobytes(), "1": half.tobytes(), "2": bf16.tobytes()}, ids)
    monkeypatch.delitem(sys.modules, "torch")
    read = read_state_dict(tmp_path / "ok.pth")
    assert np.array_equal(read["w"], base.reshape(3, 4))
    assert np.array_equal(read["transposed"], base.reshape(3, 4)[:, 1:3].T)
    assert read["h"].dtype == np.float16 and np.array_equal(read["h"], half)
    assert np.array_equal(read["b"], [3.0, -0.5])


def test_tensor_past_its_storage_is_refused_naming_the_key(tmp_path, monkeypatch):
    rebuild, types_ = _fake_torch(monkeypatch)
    marker = object()
    ids = {id(marker): ("storage", types_["FloatStorage"], "0", "cpu", 4)}
    _zip_file(tmp_path / "short.pth", {"layer1.0.conv1.weight": _Tensor(rebuild, marker, 2, (2, 2), (2, 1))},
              {"0": np.zeros(4, np.float32).tobytes()}, ids)
    with pytest.raises(DataFormatError, match=r"layer1\.0\.conv1\.weight: tensor of size \(2, 2\) at offset 2 runs past"):
        read_state_dict(tmp_path / "short.pth")


class _Exploit:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_pickle_asking_for_code_is_refused_and_nothing_runs(tmp_path, capsys, fmt):
    import os

    marker = tmp_path / "pwned"
    payload = {"conv1.weight": _Exploit(os.system, f"touch {marker}")}
    path = tmp_path / f"evil_{fmt}.pth"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
    else:
        path.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in
                                  (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, payload)))
    assert faceflow_main(["import", "torch", str(path), str(tmp_path / "out"), "--network", "r18"]) == 1
    err = one_line_error(capsys)
    assert f"{os.system.__module__}.system" in err and "refused" in err and "nothing was run" in err
    assert not marker.exists() and not (tmp_path / "out").exists()
    with zipfile.ZipFile(tmp_path / "eval.pth", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_Exploit(eval, "1+1"), protocol=2))
    with pytest.raises(DataFormatError, match=r"refused: the pickle asks for (__builtin__|builtins)\.eval"):
        read_torch_file(tmp_path / "eval.pth")
