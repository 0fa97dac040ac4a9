"""Shared helpers of the model-exchange tests: backbones with random weights *and* BN statistics,
faceflow checkpoints of them, InsightFace-style MXNet models built with MXNet's symbol API, and the
ONNX contract check."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from faceflow.runtime.flow import flow

from faceflow.checkpoint import write_checkpoint
from faceflow.export.mxnet_runtime import mx
from faceflow.export.mxnet_symbol import IRESNET_UNITS, insightface_bn, iresnet_symbol, mobilefacenet_symbol
from faceflow.export.parity import MIN_COSINE, compare, normalised_nchw, oneflow_embeddings
from faceflow.models import build_backbone

INSIGHTFACE_SCALE = 0.0078125  # InsightFace's own symbols: (x - 127.5) * 0.0078125


def randomise(model, seed: int = 0, fc1_gamma: float | None = None):
    """Give every weight and every BN statistic a random value, so a wrong name or layout shows up."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in model.state_dict().items():
        shape = tuple(value.shape)
        if key.endswith("num_batches_tracked"):
            state[key] = value
            continue
        if key.endswith("running_var"):
            array = rng.uniform(0.5, 2.0, shape)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            array = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:
            array = rng.uniform(0.5, 1.5, shape)
        else:
            array = rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[1:])), shape)
        state[key] = flow.tensor(array.astype(np.float32))
    if fc1_gamma is not None:
        gamma = np.full(tuple(model.fc1.weight.shape), fc1_gamma, np.float32)
        gamma[::2] *= -1
        state["fc1.weight"] = flow.tensor(gamma)
    model.load_state_dict(state)
    return model.eval()


def random_backbone(network: str, embedding_size: int, seed: int = 0, fc1_gamma: float | None = None,
                    **network_kwargs):
    """A faceflow backbone (network_kwargs as in a config) with random weights, in eval mode."""
    return randomise(build_backbone(network, embedding_size=embedding_size, **network_kwargs), seed, fc1_gamma)


def save_checkpoint(model, network: str, embedding_size: int, root: Path, step: int = 7) -> Path:
    """Write `model` as a faceflow checkpoint under `root`; return its directory."""
    config = {"network": network, "embedding_size": embedding_size}
    return write_checkpoint(root, step, config, {"epoch": 0},
                            lambda tmp: flow.save(model.state_dict(), str(tmp / "backbone")))


def insightface_mxnet_model(network: str, embedding_size: int, prefix: Path, epoch: int = 3, seed: int = 0,
                            classifier: int = 0) -> Path:
    """An InsightFace-style MXNet model with random weights and BN statistics, saved as PREFIX-EPOCH.params.

    Built like InsightFace: raw-pixel input normalised with 0.0078125, fresnet Dropout(0.4), fmobilefacenet's
    default BN eps 1e-3, fc1 fix_gamma; with `classifier` > 0 a training-time `fc7` head is saved too.
    """
    if network == "mbf":
        symbol = mobilefacenet_symbol(embedding_size, insightface_bn("mbf"), input_scale=INSIGHTFACE_SCALE)
    else:
        symbol = iresnet_symbol(IRESNET_UNITS[network], embedding_size, insightface_bn(network), dropout=0.4,
                                input_scale=INSIGHTFACE_SCALE)
    if classifier:
        symbol = mx.sym.FullyConnected(data=symbol, num_hidden=classifier, no_bias=True, name="fc7")
    module = mx.mod.Module(symbol, context=mx.cpu(), label_names=None)
    module.bind(data_shapes=[("data", (1, 3, 112, 112))], for_training=False)
    mx.random.seed(seed)
    module.init_params(mx.init.Xavier(magnitude=2.0))
    args, aux = module.get_params()
    rng = np.random.default_rng(seed)
    for name, value in args.items():
        if name.endswith("_gamma"):
            args[name] = mx.nd.array(rng.uniform(0.5, 1.5, value.shape))
        elif name.endswith("_beta") or name.endswith("_bias"):
            args[name] = mx.nd.array(rng.normal(0.0, 0.1, value.shape))
    for name, value in aux.items():
        low_high = (0.5, 2.0) if name.endswith("_var") else None
        aux[name] = mx.nd.array(rng.uniform(*low_high, value.shape) if low_high else rng.normal(0, 0.1, value.shape))
    prefix.parent.mkdir(parents=True, exist_ok=True)
    mx.model.save_checkpoint(str(prefix), epoch, symbol, args, aux)
    return prefix


def check_onnx_model(path, model, images, embedding):
    """The ONNX contract: one `data` input with a symbolic batch, one embedding output, fp32 weights, no
    Sub/Mul at the start, and onnxruntime equal to OneFlow at batch 1 and at the full batch."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert inp.name == "data"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [3, 112, 112]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert outp.type.tensor_type.shape.dim[0].dim_param
    assert outp.type.tensor_type.shape.dim[1].dim_value == embedding
    weights = [t for t in proto.graph.initializer if len(t.dims) > 1]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT for t in weights)
    # InsightFace's ArcFaceONNX looks for nodes named Sub/Mul among the first 8 to decide "normalises inside";
    # no arithmetic reads the input either (a ViT's first LayerNorm has a Sub among its first 8 nodes)
    for node in proto.graph.node[:8]:
        assert not node.name.startswith(("Sub", "_minus", "Mul", "_mul"))
    for node in proto.graph.node:
        assert "data" not in node.input or node.op_type not in ("Sub", "Mul", "Div", "Add")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = normalised_nchw(images)
    reference = oneflow_embeddings(model, batch)
    for size in sorted({1, len(batch)}):
        result = session.run(None, {"data": batch[:size]})
        assert len(result) == 1 and result[0].shape == (size, embedding)
        figures = compare(reference[:size], result[0])
        assert figures.min_cosine >= MIN_COSINE
        assert figures.max_abs_diff <= 1e-3 * np.abs(reference).max()
