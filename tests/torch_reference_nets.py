"""Run by the test venv's PyTorch (not by faceflow's Python): arcface_torch-layout backbones written for the
tests (module names and order as arcface_torch's backbones/iresnet.py and mobilefacenet.py, so the state-dict
keys are the zoo files' keys), given random weights and BN statistics, saved with torch.save, their
embeddings of the given images computed, and optionally exported to ONNX.

    python torch_reference_nets.py SPEC.json [SPEC.json ...]

SPEC: {"network": "r18"|"r34"|"r50"|"mbf"|"vit", "embedding_size": E, "seed": S, "images": "x.npy" (N x 3 x 112 x 112
float32, already (x-127.5)/127.5), "pth": OUT.pth, "legacy": bool, "embeddings": OUT.npy,
"onnx": [{"path": P, "mode": "fold"|"preserve"|"dynamo"}], "wrapped": bool}; a vit takes "width" and "depth".
SPEC {"counts": OUT.json, "vit": {NAME: [width, depth], ...}, "embedding_size": E} instead writes the parameter
count of each ViT, built on the meta device (no memory, no weights).
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch
from torch import nn

UNITS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3)}


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, units, embedding: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (count, cout) in enumerate(zip(units, (64, 128, 256, 512)), start=1):
            blocks = [Block(cin, cout, 2)] + [Block(cout, cout, 1) for _ in range(count - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = cout
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * 49, embedding)
        self.features = nn.BatchNorm1d(embedding, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.dropout(torch.flatten(self.bn2(x), 1))))


def conv_bn(cin, cout, kernel=1, stride=1, padding=0, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return Seq(*(layers + [nn.PReLU(cout)] if act else layers))


class Seq(nn.Module):
    """A module whose children sit in `.layers` (arcface_torch's ConvBlock/LinearBlock/Residual pattern)."""

    def __init__(self, *modules, residual: bool = False) -> None:
        super().__init__()
        self.layers = nn.Sequential(*modules)
        self.residual = residual

    def forward(self, x):
        return x + self.layers(x) if self.residual else self.layers(x)


def bottleneck(cin, cout, expand, stride, residual=False):
    return Seq(conv_bn(cin, expand), conv_bn(expand, expand, 3, stride, 1, groups=expand),
               conv_bn(expand, cout, act=False), residual=residual)


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class MobileFaceNet(nn.Module):
    def __init__(self, embedding: int, blocks=(4, 6, 2), scale: int = 2) -> None:
        super().__init__()
        t64, t128 = 64 * scale, 128 * scale
        self.layers = nn.ModuleList([
            conv_bn(3, t64, 3, 2, 1), conv_bn(t64, t64, 3, 1, 1, groups=64),
            bottleneck(t64, t64, 128, 2), Seq(*[bottleneck(t64, t64, 128, 1, True) for _ in range(blocks[0])]),
            bottleneck(t64, t128, 256, 2), Seq(*[bottleneck(t128, t128, 256, 1, True) for _ in range(blocks[1])]),
            bottleneck(t128, t128, 512, 2), Seq(*[bottleneck(t128, t128, 256, 1, True) for _ in range(blocks[2])]),
        ])
        self.conv_sep = conv_bn(t128, 512)
        self.features = Seq(conv_bn(512, 512, 7, 1, 0, groups=512, act=False), Flatten(),
                            nn.Linear(512, embedding, bias=False), nn.BatchNorm1d(embedding))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


class ViTAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        weights = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


class ViTMlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, 4 * width), nn.ReLU6(), nn.Linear(4 * width, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp = ViTAttention(width, heads), ViTMlp(width)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTPatches(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, 9, 9)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    """Eval-mode forward of arcface_torch's face ViT (patch 9 on 112, 8 heads, LayerNorm, feature head)."""

    def __init__(self, embedding: int, width: int, depth: int, heads: int = 8) -> None:
        super().__init__()
        self.patch_embed = ViTPatches(width)
        self.pos_embed = nn.Parameter(torch.zeros(1, 144, width))
        self.blocks = nn.ModuleList([ViTBlock(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.feature = nn.Sequential(nn.Linear(144 * width, width, bias=False), nn.BatchNorm1d(width, eps=2e-5),
                                     nn.Linear(width, embedding, bias=False), nn.BatchNorm1d(embedding, eps=2e-5))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))

    def forward(self, x):
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.feature(self.norm(x).flatten(1))


def write_counts(spec: dict) -> None:
    counts = {}
    with torch.device("meta"):
        for name, (width, depth) in spec["vit"].items():
            counts[name] = sum(p.numel() for p in ViT(spec["embedding_size"], width, depth).parameters())
    json.dump(counts, open(spec["counts"], "w"))


def randomise(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                value = torch.rand(tensor.shape, generator=generator) * 1.5 + 0.5
            elif name.endswith("running_mean") or name.endswith(".bias"):
                value = torch.randn(tensor.shape, generator=generator) * 0.1
            elif tensor.dim() == 1:
                value = torch.rand(tensor.shape, generator=generator) + 0.5
            else:
                fan_in = tensor[0].numel()
                value = torch.randn(tensor.shape, generator=generator) / fan_in ** 0.5
            tensor.copy_(value)
        if isinstance(model, IResNet):
            model.features.weight.fill_(1.0)
        elif isinstance(model, ViT):  # trained feature-BN gammas, some negative
            gamma = model.feature[3].weight
            gamma.mul_(torch.where(torch.arange(gamma.numel()) % 3 == 0, -1.0, 1.0))
        else:  # a trained GDC BatchNorm1d gamma, some negative
            gamma = model.features.layers[3].weight
            gamma.mul_(torch.where(torch.arange(gamma.numel()) % 3 == 0, -1.0, 1.0))
    return model.eval()


def main(spec_path: str) -> None:
    spec = json.load(open(spec_path))
    if "counts" in spec:
        write_counts(spec)
        return
    torch.manual_seed(spec["seed"])
    network, embedding = spec["network"], spec["embedding_size"]
    if network == "vit":
        model = ViT(embedding, spec["width"], spec["depth"])
    elif network == "mbf":
        model = MobileFaceNet(embedding, spec.get("blocks", (4, 6, 2)), spec.get("scale", 2))
    else:
        model = IResNet(UNITS[network], embedding)
    randomise(model, spec["seed"])
    state = model.state_dict()
    payload = {"epoch": 3, "state_dict_backbone": state, "lr": 0.1} if spec.get("wrapped") else state
    torch.save(payload, spec["pth"], _use_new_zipfile_serialization=not spec.get("legacy", False))
    images = torch.from_numpy(np.load(spec["images"]))
    with torch.no_grad():
        np.save(spec["embeddings"], model(images).numpy())
    for target in spec.get("onnx", []):
        kwargs = {"input_names": ["data"], "output_names": ["embedding"]}
        if target["mode"] == "dynamo":
            torch.onnx.export(model, (images[:1],), target["path"], dynamo=True, external_data=False, **kwargs)
        else:
            training = torch.onnx.TrainingMode.PRESERVE if target["mode"] == "preserve" else torch.onnx.TrainingMode.EVAL
            torch.onnx.export(model, (images[:1],), target["path"], dynamo=False, opset_version=11,
                              training=training, dynamic_axes={"data": {0: "N"}, "embedding": {0: "N"}}, **kwargs)


if __name__ == "__main__":
    for spec_file in sys.argv[1:]:
        main(spec_file)
