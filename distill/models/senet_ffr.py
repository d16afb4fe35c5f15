"""FFR-Net teacher: the SENet50 (IR-SE-50) backbone plus the feature-rectification blocks.

Layouts checked against the authors' public code, github.com/haoosz/FFR-Net (final commit):
``pretrain/model_ir_se50.py`` loads ``se50.pth`` into ``Backbone(50, mode='ir_se')``, the
IR-SE-50 of TreB1eN/InsightFace_Pytorch (``input_layer``, ``body.<i>.{shortcut_layer,
res_layer}`` with an SE module ``fc1``/``fc2``, ``bn``, ``output_layer``), *not* the VGGFace2
SE-ResNet-50 of cydonia999/VGGFace2-pytorch (``conv1``/``layer1..4``/``conv4``/``conv5``/``fc``):
an earlier commit used a VGGFace2 ``senet50_256`` but the released trainer and README use
IR-SE-50 at 112x112 and a 512x7x7 feature map. ``models/recnet.py`` ``RecNet`` is the
rectification network saved in ``FFRNet.pth`` under the ``'RecNet'`` key, beside its CosFace
head (``classifier.weight``, 10575 CASIA-WebFace identities), which is a training head and is
left out here. Names mirror upstream so both files load with ``strict=True``; the code is ours.

RecBlocks (paper: "A Unified Framework for Masked and Mask-Free Face Recognition via Feature
Rectification", Hao et al., ICIP 2022): from the feature map X (C x H x W) compute the spatial and
channel self-similarity (cosine) matrices; the spatial RecBlock predicts an (HW x HW) mixing
matrix from [X, spatial similarity], the channel RecBlock a (C x C) one from [X, channel
similarity]; X is re-mixed by both, the channel result is merged with its horizontal flip, and the
three maps [spatial, channel, X] are merged into the rectified map, average-pooled to the
embedding.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.checkpoints import load_official_checkpoint
from distill.registry import register_model

FEATURE_MAP = 7  # 112x112 input after four stride-2 stages


class SEModule(nn.Module):
    """Squeeze-and-excitation gate; bias-free 1x1 convs named ``fc1``/``fc2`` as upstream."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IRSEUnit(nn.Module):
    """IR-SE residual unit: BN, conv3x3, PReLU, conv3x3(stride), BN, SE, plus the shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, se_reduction: int) -> None:
        super().__init__()
        if in_ch == out_ch:
            # A 1x1 max-pool with a stride is plain subsampling; upstream uses it, keep it.
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            SEModule(out_ch, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class SENet50(nn.Module):
    """IR-SE-50 backbone; ``forward`` returns the unnormalised embedding, ``feature_map`` the map.

    Args:
        units: residual units per stage (50 layers: 3, 4, 14, 3).
        widths: channels per stage; the stem has ``widths[0]`` channels.
        embedding_size: output of the ``output_layer`` linear + BN.
        se_reduction: SE bottleneck ratio (16 upstream).
        dropout: dropout before the linear layer (upstream trains with 0.6; inactive in eval).
    """

    def __init__(
        self,
        units: Sequence[int] = (3, 4, 14, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        embedding_size: int = 512,
        se_reduction: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0])
        )
        body, in_ch = [], widths[0]
        for count, width in zip(units, widths):
            for i in range(count):
                body.append(IRSEUnit(in_ch, width, 2 if i == 0 else 1, se_reduction))
                in_ch = width
        self.out_channels = in_ch
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(in_ch * FEATURE_MAP * FEATURE_MAP, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )
        # A separate BN gives the map FFR-Net rectifies; upstream registers it after
        # output_layer and before body, and the state_dict order follows.
        self.bn = nn.BatchNorm2d(in_ch)
        self.body = nn.Sequential(*body)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised last feature map ``(N, C, 7, 7)`` that the RecBlocks consume."""
        return self.bn(self.body(self.input_layer(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


class _Norm(nn.Module):
    # Upstream wraps the BN in a NormLayer whose child is ``norm``: keys read ``norm.norm.*``.
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _Act(nn.Module):
    # Upstream wraps the PReLU in a ReluLayer whose child is ``func``: keys read ``relu.func.*``.
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.func = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


class RecConv(nn.Module):
    """Reflection-padded conv3x3 -> BN -> PReLU (upstream ``ConvLayer`` with bn/prelu)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(1)
        self.conv2d = nn.Conv2d(in_ch, out_ch, 3, 1, bias=False)
        self.relu = _Act(out_ch)
        self.norm = _Norm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.conv2d(self.reflection_pad(x))))


class RecResidual(nn.Module):
    """Two ``RecConv`` with an identity skip (upstream ``ResidualBlock``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = RecConv(channels, channels)
        self.conv2 = RecConv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + x


def _conv_stage(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [RecConv(in_ch, out_ch), RecResidual(out_ch)]


def _channel_mlp(in_features: int, channels: int, hidden: int) -> list[nn.Module]:
    # PReLU over dim 1 of a (N, C, hidden) tensor: one slope per feature-map channel.
    return [nn.Linear(in_features, hidden), _Act(channels), nn.Linear(hidden, channels)]


class FeatureRectifier(nn.Module):
    """FFR-Net RecBlocks (upstream ``RecNet``); maps ``(N, C, 7, 7)`` to ``(N, C)``.

    Attribute names (``Conv4Space``, ``Conv4Channel``, ``ChannelFlipMerge``, ``Conv4Merge``) are
    upstream's so ``FFRNet.pth`` loads unchanged.

    Args:
        channels: feature-map channels C (512 for SENet50).
        size: feature-map side (7).
        space_widths: widths of the two conv stages of the spatial RecBlock (256, 128 upstream).
        channel_hidden: hidden width of the channel RecBlock MLPs (32 upstream).
    """

    def __init__(
        self,
        channels: int = 512,
        size: int = FEATURE_MAP,
        space_widths: tuple[int, int] = (256, 128),
        channel_hidden: int = 32,
    ) -> None:
        super().__init__()
        positions = size * size
        self.size = size
        self.Conv4Space = nn.Sequential(
            *_conv_stage(channels + positions, space_widths[0]),
            *_conv_stage(space_widths[0], space_widths[1]),
            *_conv_stage(space_widths[1], positions),
            nn.Sigmoid(),
        )
        self.Conv4Channel = nn.Sequential(
            *_channel_mlp(channels + positions, channels, channel_hidden),
            *_channel_mlp(channels, channels, channel_hidden),
            *_channel_mlp(channels, channels, channel_hidden),
            nn.Sigmoid(),
        )
        self.ChannelFlipMerge = nn.Sequential(*_conv_stage(2 * channels, channels))
        self.Conv4Merge = nn.Sequential(*_conv_stage(3 * channels, channels))

    def rectify(self, fmap: torch.Tensor) -> torch.Tensor:
        """Return the rectified feature map, same shape as ``fmap``."""
        n, c, h, w = fmap.shape
        flat = fmap.flatten(2)  # N, C, HW
        space_sim, channel_sim = self_similarity(flat)
        space_in = torch.cat((fmap, space_sim.view(n, h * w, h, w)), 1)
        mix_space = self.Conv4Space(space_in).flatten(2)  # N, HW, HW
        mix_channel = self.Conv4Channel(torch.cat((flat, channel_sim), 2))  # N, C, C
        by_space = torch.matmul(flat, mix_space).view(n, c, h, w)
        by_channel = torch.matmul(mix_channel, flat).view(n, c, h, w)
        # Faces are left-right symmetric: merging with the mirrored map lets a visible half
        # stand in for an occluded one.
        by_channel = self.ChannelFlipMerge(torch.cat((by_channel.flip(3), by_channel), 1))
        return self.Conv4Merge(torch.cat((by_space, by_channel, fmap), 1))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.rectify(fmap).mean(dim=(2, 3))


def self_similarity(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine self-similarity of a ``(N, C, HW)`` map.

    Returns:
        Spatial ``(N, HW, HW)`` (positions compared by their C-vectors) and channel
        ``(N, C, C)`` (channels compared by their HW-maps).
    """
    by_position = F.normalize(flat.transpose(1, 2), dim=2)
    by_channel = F.normalize(flat, dim=2)
    return by_position @ by_position.transpose(1, 2), by_channel @ by_channel.transpose(1, 2)


class SENet50FFR(nn.Module):
    """FFR-Net: ``backbone`` (SENet50, frozen upstream) then ``rectifier`` (RecBlocks).

    ``forward`` returns the unnormalised rectified embedding ``(N, C)``, which upstream's LFW
    evaluation compares by cosine.
    """

    def __init__(self, backbone: SENet50, rectifier: FeatureRectifier) -> None:
        super().__init__()
        self.backbone = backbone
        self.rectifier = rectifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rectifier(self.backbone.feature_map(x))


_TINY_BACKBONE = {
    "units": (1, 1, 1, 1), "widths": (8, 8, 16, 16), "embedding_size": 16, "se_reduction": 4
}
_TINY_RECTIFIER = {"space_widths": (16, 8), "channel_hidden": 8}


def _create_senet_ffr(backbone: dict, rectifier: dict | None) -> nn.Module:
    net = SENet50(**backbone)
    if rectifier is None:
        return net
    return SENet50FFR(net, FeatureRectifier(channels=net.out_channels, **rectifier))


@register_model()
def senet50(**kwargs) -> SENet50:
    """FFR-Net's SENet50 backbone (IR-SE-50, 512-d); loads ``se50.pth``."""
    return _create_senet_ffr(kwargs, None)


@register_model()
def senet50_ffr(**kwargs) -> SENet50FFR:
    """FFR-Net teacher: SENet50 + RecBlocks, 512-d; loads ``se50.pth`` and ``FFRNet.pth``."""
    return _create_senet_ffr(kwargs, {})


@register_model()
def senet50_ffr_tiny(**kwargs) -> SENet50FFR:
    """A few-channel FFR-Net for tests: same key names and 112x112 input, 16-d embedding."""
    return _create_senet_ffr({**_TINY_BACKBONE, **kwargs}, _TINY_RECTIFIER)


def load_ffr_weights(
    model: SENet50FFR, se50_path: str | None = None, ffrnet_path: str | None = None
) -> SENet50FFR:
    """Load the released FFR-Net files into ``model``: ``se50.pth`` then ``FFRNet.pth``.

    Raises:
        ModelFileError: a file is missing, truncated or corrupt.
        CheckpointLayoutError: a file's keys or shapes do not match its layout.
    """
    if se50_path is not None:
        load_official_checkpoint(model, se50_path, layout="ffr_se50")
    if ffrnet_path is not None:
        load_official_checkpoint(model, ffrnet_path, layout="ffr_recnet")
    return model
