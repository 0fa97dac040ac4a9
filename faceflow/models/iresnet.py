"""IResNet ("LResNet-E-IR", InsightFace fresnet version_unit 3, output E): r18, r34, r50, r100, r200.

Layer for layer as InsightFace's MXNet `fresnet.py`, and module names chosen so that a state-dict
key maps 1:1 to the MXNet parameter name: replace '.' by '_', then for BatchNorm
`weight/bias/running_mean/running_var` -> `gamma/beta/moving_mean/moving_var`, for PReLU
`weight` -> `gamma`. Examples: `conv0.weight` -> `conv0_weight`, `bn0.running_var` ->
`bn0_moving_var`, `relu0.weight` -> `relu0_gamma`, `stage2_unit1.conv1sc.weight` ->
`stage2_unit1_conv1sc_weight`, `stage2_unit1.sc.weight` -> `stage2_unit1_sc_gamma`,
`pre_fc1.weight` -> `pre_fc1_weight`, `fc1.running_mean` -> `fc1_moving_mean`.
`fc1` is the MXNet `fix_gamma=True` BatchNorm: its `weight` is fixed at 1 (requires_grad False).
The MXNet symbol normalizes raw pixels inside (`(x-127.5)*0.0078125`); this module expects the
already normalized input, so an exporter prepends that step.
"""
from __future__ import annotations

from faceflow.runtime.flow import flow, nn

from faceflow.models.registry import register_model

BN_EPS = 2e-5
BN_MOMENTUM = 0.1  # OneFlow/PyTorch convention; equals MXNet momentum 0.9
STAGE_FILTERS = (64, 128, 256, 512)
UNITS = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Residual unit v3: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, plus conv1x1+BN shortcut when shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int, dim_match: bool) -> None:
        super().__init__()
        self.bn1 = _bn2d(in_channels)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = _bn2d(channels)
        self.relu1 = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = _bn2d(channels)
        self.dim_match = dim_match
        if not dim_match:
            self.conv1sc = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)
            self.sc = _bn2d(channels)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        out = self.bn3(self.conv2(self.relu1(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.dim_match else self.sc(self.conv1sc(x))
        return out + shortcut


class IResNet(nn.Module):
    """IResNet backbone: stem, four stages (first unit of each strides by 2), E output head."""

    def __init__(self, units: tuple[int, ...], embedding_size: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv0 = _conv3x3(3, 64)
        self.bn0 = _bn2d(64)
        self.relu0 = nn.PReLU(64)
        self.unit_names: list[str] = []
        in_channels = 64
        for stage, (count, channels) in enumerate(zip(units, STAGE_FILTERS), start=1):
            for unit in range(1, count + 1):
                name = f"stage{stage}_unit{unit}"
                first = unit == 1
                block = IBasicBlock(in_channels, channels, stride=2 if first else 1, dim_match=not first)
                self.add_module(name, block)
                self.unit_names.append(name)
                in_channels = channels
        self.bn1 = _bn2d(512)
        self.dropout = nn.Dropout(p=dropout)
        self.pre_fc1 = nn.Linear(512 * 7 * 7, embedding_size)
        self.fc1 = nn.BatchNorm1d(embedding_size, eps=BN_EPS, momentum=BN_MOMENTUM)
        nn.init.ones_(self.fc1.weight)
        self.fc1.weight.requires_grad = False

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        x = self.relu0(self.bn0(self.conv0(x)))
        for name in self.unit_names:
            x = getattr(self, name)(x)
        x = self.dropout(self.bn1(x))
        return self.fc1(self.pre_fc1(flow.flatten(x, 1)))


def _iresnet(name: str, embedding_size: int, dropout: float) -> IResNet:
    return IResNet(UNITS[name], embedding_size=embedding_size, dropout=dropout)


@register_model("r18")
def r18(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet 18 (`UNITS['r18']`) with the E head: BN, dropout, FC(25088->emb), BN1d."""
    return _iresnet("r18", embedding_size, dropout)


@register_model("r34")
def r34(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet 34 (`UNITS['r34']`) with the E head: BN, dropout, FC(25088->emb), BN1d."""
    return _iresnet("r34", embedding_size, dropout)


@register_model("r50")
def r50(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet 50 (`UNITS['r50']`) with the E head: BN, dropout, FC(25088->emb), BN1d."""
    return _iresnet("r50", embedding_size, dropout)


@register_model("r100")
def r100(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet 100 (`UNITS['r100']`) with the E head: BN, dropout, FC(25088->emb), BN1d."""
    return _iresnet("r100", embedding_size, dropout)


@register_model("r200")
def r200(embedding_size: int = 512, dropout: float = 0.0) -> IResNet:
    """IResNet 200 (`UNITS['r200']`) with the E head: BN, dropout, FC(25088->emb), BN1d."""
    return _iresnet("r200", embedding_size, dropout)
