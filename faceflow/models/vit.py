"""Vision Transformers for faces as arcface_torch has them (`vit_t`, `vit_s`, `vit_b`, `vit_l`).

112x112 input cut into 9x9 patches (144 tokens, no class token), learned position embedding, pre-norm
blocks (LayerNorm, 8-head attention without qkv bias, ReLU6 MLP of 4x width) with drop path rising
linearly to `drop_path` over the depth, a final LayerNorm and arcface_torch's feature head: flatten the
144 tokens, Linear (no bias) to the width, BatchNorm1d, Linear (no bias) to the embedding, BatchNorm1d
(eps 2e-5, both gammas trained). In training a `mask_ratio` share of the tokens is dropped at random
before the blocks and refilled with the learned `mask_token` after them.
Module names are arcface_torch's (`patch_embed.proj`, `pos_embed`, `blocks.{i}.{norm1,attn.qkv,attn.proj,
norm2,mlp.fc1,mlp.fc2}`, `norm`, `feature.{0..3}`, `mask_token`), so its state-dict keys are faceflow's.
Knobs through network_kwargs: `depth`, `width`, `num_heads`, `drop_path`, `mask_ratio`; `dropout` acts on
the flattened tokens before the feature head.
"""
from __future__ import annotations

from faceflow.runtime.flow import flow, nn

from faceflow.errors import ConfigError
from faceflow.models.registry import register_model

INPUT_SIZE = 112
PATCH = 9
NUM_PATCHES = (INPUT_SIZE // PATCH) ** 2  # 144: arcface_torch's patch grid drops the last 4 pixels
MLP_RATIO = 4
FEATURE_BN_EPS = 2e-5
LAYER_NORM_EPS = 1e-5
INIT_STD = 0.02


def _batch_random(x: flow.Tensor, *shape: int) -> flow.Tensor:
    """Uniform [0, 1) noise of `shape` (batch first), laid out like `x` (each rank draws its own batch slice)."""
    if x.is_global:
        return flow.rand(*shape, placement=x.placement, sbp=x.sbp)
    return flow.rand(*shape, device=x.device)


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension (eps 1e-5) from mean and mean square: ops oneflow-onnx converts
    (OneFlow's own LayerNorm becomes a `var` op it has no ONNX form for)."""

    def __init__(self, width: int, eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(flow.ones(width))
        self.bias = nn.Parameter(flow.zeros(width))

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        variance = (centred * centred).mean(dim=-1, keepdim=True)
        return centred / flow.sqrt(variance + self.eps) * self.weight + self.bias


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a `rate` share of the samples, scale the rest."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = flow.floor(_batch_random(x, x.shape[0], 1, 1) + keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention over the tokens: one qkv Linear (no bias), softmax(q k^T / sqrt(d)) v, proj."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (width // num_heads) ** -0.5
        self.qkv = nn.Linear(width, width * 3, bias=False)
        self.proj = nn.Linear(width, width)

    def _heads(self, x: flow.Tensor, part: int, order: tuple[int, ...]) -> flow.Tensor:
        """q, k or v (`part` 0, 1, 2) split into heads, dimensions permuted to `order` of
        (batch, tokens, heads, head width).

        Each takes its rows of the qkv weight, so no slice runs along the batch (an ONNX export traced at
        batch 1 would keep such a slice's end and stay at batch 1); k is permuted to k^T in one step, since
        oneflow-onnx drops the transpose that OneFlow fuses into a batch matmul.
        """
        batch, tokens, width = x.shape
        weight = self.qkv.weight[part * width:(part + 1) * width]
        out = flow.matmul(x, weight, transpose_b=True)
        return out.reshape(batch, tokens, self.num_heads, width // self.num_heads).permute(*order)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        batch, tokens, width = x.shape
        q, k_t, v = (self._heads(x, part, order) for part, order in
                     ((0, (0, 2, 1, 3)), (1, (0, 2, 3, 1)), (2, (0, 2, 1, 3))))
        attn = flow.softmax(flow.matmul(q, k_t) * self.scale, dim=-1)
        out = flow.matmul(attn, v).transpose(1, 2).reshape(batch, tokens, width)
        return self.proj(out)


def relu6(x: flow.Tensor) -> flow.Tensor:
    """min(max(x, 0), 6) as relu(x) - relu(x - 6): oneflow-onnx writes OneFlow's ReLU6 as a Clip without bounds."""
    return flow.relu(x) - flow.relu(x - 6.0)


class Mlp(nn.Module):
    """fc1, ReLU6, fc2 (arcface_torch's choice of activation)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        return self.fc2(relu6(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))."""

    def __init__(self, width: int, num_heads: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm(width)
        self.attn = Attention(width, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(width)
        self.mlp = Mlp(width, width * MLP_RATIO)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """9x9 stride-9 conv: N x 3 x 112 x 112 -> N x 144 x width tokens."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def _trunc_normal(tensor: flow.Tensor) -> None:
    nn.init.trunc_normal_(tensor, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)


class VisionTransformer(nn.Module):
    """arcface_torch's face ViT: patch tokens, `depth` blocks, LayerNorm, flatten + two-FC feature head."""

    def __init__(self, embedding_size: int, width: int, depth: int, num_heads: int = 8, drop_path: float = 0.1,
                 mask_ratio: float = 0.1, dropout: float = 0.0) -> None:
        super().__init__()
        if not (isinstance(width, int) and isinstance(num_heads, int) and width > 0 and num_heads > 0
                and width % num_heads == 0):
            raise ConfigError(f"width: must be a positive multiple of num_heads ({num_heads}), got {width!r}")
        if not (isinstance(depth, int) and depth >= 1):
            raise ConfigError(f"depth: must be a positive integer, got {depth!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"drop_path: must be in [0, 1), got {drop_path!r}")
        if not 0.0 <= mask_ratio < 1.0 or int(NUM_PATCHES * (1 - mask_ratio)) < 1:
            raise ConfigError(f"mask_ratio: must be in [0, 1) and keep a token, got {mask_ratio!r}")
        self.width = width
        self.mask_ratio = float(mask_ratio)
        self.patch_embed = PatchEmbed(width)
        self.pos_embed = nn.Parameter(flow.zeros(1, NUM_PATCHES, width))
        rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList([Block(width, num_heads, rate) for rate in rates])
        self.norm = LayerNorm(width)
        self.dropout = nn.Dropout(p=dropout)
        self.feature = nn.Sequential(
            nn.Linear(width * NUM_PATCHES, width, bias=False), nn.BatchNorm1d(width, eps=FEATURE_BN_EPS),
            nn.Linear(width, embedding_size, bias=False), nn.BatchNorm1d(embedding_size, eps=FEATURE_BN_EPS))
        self.mask_token = nn.Parameter(flow.zeros(1, 1, width))
        self._initialise()

    def _initialise(self) -> None:
        """arcface_torch's init: truncated N(0, 0.02) Linear weights and position embedding, zero biases."""
        nn.init.normal_(self.mask_token, std=INIT_STD)
        _trunc_normal(self.pos_embed)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _trunc_normal(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _masked(self, x: flow.Tensor) -> tuple[flow.Tensor, flow.Tensor]:
        """Keep a random `1 - mask_ratio` share of each sample's tokens; returns them and the restoring order."""
        batch, tokens, width = x.shape
        keep = int(tokens * (1 - self.mask_ratio))
        shuffle = flow.argsort(_batch_random(x, batch, tokens), dim=1)
        restore = flow.argsort(shuffle, dim=1)
        kept = flow.gather(x, 1, shuffle[:, :keep].unsqueeze(-1).repeat(1, 1, width))
        return kept, restore

    def _refilled(self, x: flow.Tensor, restore: flow.Tensor) -> flow.Tensor:
        """The kept tokens back in place, the dropped ones replaced by `mask_token`."""
        batch, kept, width = x.shape
        filler = self.mask_token.repeat(batch, NUM_PATCHES - kept, 1)
        full = flow.cat([x, filler], dim=1)
        return flow.gather(full, 1, restore.unsqueeze(-1).repeat(1, 1, width))

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        masking = self.training and self.mask_ratio > 0
        if masking:
            x, restore = self._masked(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if masking:
            x = self._refilled(x, restore)
        return self.feature(self.dropout(x.flatten(1)))


@register_model("vit_t")
def vit_t(embedding_size: int = 512, dropout: float = 0.0, depth: int = 12, width: int = 256, num_heads: int = 8,
          drop_path: float = 0.1, mask_ratio: float = 0.1) -> VisionTransformer:
    """ViT-T: width 256, 12 blocks."""
    return VisionTransformer(embedding_size, width, depth, num_heads, drop_path, mask_ratio, dropout)


@register_model("vit_s")
def vit_s(embedding_size: int = 512, dropout: float = 0.0, depth: int = 12, width: int = 512, num_heads: int = 8,
          drop_path: float = 0.1, mask_ratio: float = 0.1) -> VisionTransformer:
    """ViT-S: width 512, 12 blocks."""
    return VisionTransformer(embedding_size, width, depth, num_heads, drop_path, mask_ratio, dropout)


@register_model("vit_b")
def vit_b(embedding_size: int = 512, dropout: float = 0.0, depth: int = 24, width: int = 512, num_heads: int = 8,
          drop_path: float = 0.1, mask_ratio: float = 0.1) -> VisionTransformer:
    """ViT-B: width 512, 24 blocks."""
    return VisionTransformer(embedding_size, width, depth, num_heads, drop_path, mask_ratio, dropout)


@register_model("vit_l")
def vit_l(embedding_size: int = 512, dropout: float = 0.0, depth: int = 24, width: int = 768, num_heads: int = 8,
          drop_path: float = 0.1, mask_ratio: float = 0.1) -> VisionTransformer:
    """ViT-L: width 768, 24 blocks."""
    return VisionTransformer(embedding_size, width, depth, num_heads, drop_path, mask_ratio, dropout)
