"""iResNet teachers with the insightface ``arcface_torch`` / ElasticFace state_dict layout.

The attribute names mirror ``recognition/arcface_torch/backbones/iresnet.py`` (deepinsight/
insightface) and ``backbones/iresnet.py`` (fdbtrs/ElasticFace, ``use_se=False``) so their
released backbones (e.g. ElasticFace ``295672backbone.pth``) load with ``strict=True``:
``conv1, bn1, prelu, layer1..4.<i>.{bn1, conv1, bn2, prelu, conv2, bn3, downsample.0/.1},
bn2, fc, features``. Written from the architecture, not copied; the upstream mixed-precision
switch is left out because models here stay pure (no autocast in ``forward``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from distill.registry import register_model

STAGE_WIDTHS = (64, 128, 256, 512)
# Four stride-2 stages take 112x112 down to 7x7, which the fc layer flattens.
FINAL_MAP = 7


class IBasicBlock(nn.Module):
    """Pre-activation style block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN (+ skip)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Module):
    """iResNet; ``forward`` maps ``(N, 3, 112, 112)`` to the unnormalised ``(N, num_features)``.

    Args:
        layers: blocks per stage.
        widths: channels per stage (upstream fixes these to 64, 128, 256, 512).
        num_features: embedding size.
        dropout: dropout before ``fc`` (0 at inference; upstream trains some models with 0.4).
    """

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int] = STAGE_WIDTHS,
        num_features: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        in_ch = widths[0]
        for idx, (blocks, width) in enumerate(zip(layers, widths), start=1):
            stage = [IBasicBlock(in_ch, width, 2)]
            stage += [IBasicBlock(width, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{idx}", nn.Sequential(*stage))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * FINAL_MAP * FINAL_MAP, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _init_weights(model: IResNet) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # Upstream pins the embedding BN scale to 1 and never trains it; keep that so fine-tuning
    # a loaded teacher behaves as it did upstream.
    nn.init.ones_(model.features.weight)
    model.features.weight.requires_grad = False


def _create_iresnet(layers: Sequence[int], **kwargs) -> IResNet:
    return IResNet(layers, **kwargs)


@register_model()
def iresnet18(**kwargs) -> IResNet:
    """iResNet-18, 512-d (insightface layout)."""
    return _create_iresnet((2, 2, 2, 2), **kwargs)


@register_model()
def iresnet34(**kwargs) -> IResNet:
    """iResNet-34, 512-d (insightface layout)."""
    return _create_iresnet((3, 4, 6, 3), **kwargs)


@register_model()
def iresnet50(**kwargs) -> IResNet:
    """iResNet-50, 512-d (insightface layout; ElasticFace's backbone)."""
    return _create_iresnet((3, 4, 14, 3), **kwargs)


@register_model()
def iresnet100(**kwargs) -> IResNet:
    """iResNet-100, 512-d (insightface layout; ElasticFace's backbone)."""
    return _create_iresnet((3, 13, 30, 3), **kwargs)


@register_model()
def iresnet_tiny(**kwargs) -> IResNet:
    """One block per stage and few channels, for tests; same key names, 112x112 input."""
    return _create_iresnet((1, 1, 1, 1), **{"widths": (8, 8, 16, 16), "num_features": 32, **kwargs})
