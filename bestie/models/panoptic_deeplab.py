"""Panoptic-DeepLab dual decoder and heads on a ResNet-like backbone (SPEC §3.2).

Two decoders of the same structure read the backbone's ``res2``..``res5`` features:

- ASPP on ``res5``: 1×1 conv, three 3×3 atrous convs (rates 3, 6, 9), each + BN + ReLU, and an
  image-pooling branch (global average pool, 1×1 conv, ReLU, no BN); the five outputs are
  concatenated and projected by 1×1 conv + BN + ReLU + Dropout(0.5).
- Three top-down stages (``res4``, ``res3``, ``res2``): 1×1 conv + BN + ReLU projection of the
  skip feature, bilinear upsampling (align_corners=True) of the running feature, concatenation,
  and a depthwise-separable 5×5 fuse.

The semantic decoder (ASPP 256, projections 128/64/32, 256 channels) feeds the semantic head;
the instance decoder (ASPP 256, projections 64/32/16, 128 channels) feeds the centre and
offset heads. Every head is a depthwise-separable 5×5 conv then a 1×1 conv with bias.
Decoder and head convs are initialised normal(0, 0.001) (BN weight 1, bias 0); the final
1×1 biases keep PyTorch's default.

Reference: clovaai/BESTIE@f27eb69 models/panoptic_deeplab.py (itself from
bowenc0221/panoptic-deeplab segmentation/model/decoder/{aspp,panoptic_deeplab}.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ASPP",
    "DecoderWidths",
    "PanopticDeepLabWidths",
    "PANOPTIC_DEEPLAB",
    "SMALL",
    "SinglePanopticDecoder",
    "init_decoder",
    "make_head",
    "separable_conv",
]


@dataclass(frozen=True)
class DecoderWidths:
    """Channel widths of one decoder.

    Attributes:
        aspp_channels: output channels of the ASPP (and of each of its branches).
        project_channels: skip projections for res4, res3, res2.
        decoder_channels: output channels of every fuse stage.
    """

    aspp_channels: int
    project_channels: tuple[int, int, int]
    decoder_channels: int


@dataclass(frozen=True)
class PanopticDeepLabWidths:
    """Widths of both decoders and the three heads."""

    semantic: DecoderWidths
    instance: DecoderWidths
    semantic_head: int
    center_head: int
    offset_head: int
    aspp_rates: tuple[int, int, int] = (3, 6, 9)


# The official widths (SPEC §3.2).
PANOPTIC_DEEPLAB = PanopticDeepLabWidths(
    semantic=DecoderWidths(256, (128, 64, 32), 256),
    instance=DecoderWidths(256, (64, 32, 16), 128),
    semantic_head=256,
    center_head=128,
    offset_head=32,
)
# Reduced widths for the CPU-sized "small" backbone (same structure, about 1/4 of the width).
SMALL = PanopticDeepLabWidths(
    semantic=DecoderWidths(64, (32, 16, 8), 64),
    instance=DecoderWidths(64, (16, 8, 4), 32),
    semantic_head=64,
    center_head=32,
    offset_head=16,
)


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, *, dilation: int = 1, groups: int = 1):
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(
            in_ch, out_ch, kernel, padding=padding, dilation=dilation, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def separable_conv(in_ch: int, out_ch: int, kernel: int = 5) -> nn.Sequential:
    """Depthwise k×k conv + BN + ReLU, then pointwise 1×1 conv + BN + ReLU."""
    return nn.Sequential(
        _conv_bn_relu(in_ch, in_ch, kernel, groups=in_ch), _conv_bn_relu(in_ch, out_ch, 1)
    )


def make_head(in_ch: int, head_ch: int, out_ch: int) -> nn.Sequential:
    """A prediction head: depthwise-separable 5×5 (in_ch→head_ch), then 1×1 (→out_ch, bias)."""
    return nn.Sequential(separable_conv(in_ch, head_ch), nn.Conv2d(head_ch, out_ch, 1))


class _ImagePooling(nn.Module):
    """ASPP image-level branch: global average pool, 1×1 conv, ReLU (no BN), upsample."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.relu(self.conv(F.adaptive_avg_pool2d(x, 1)))
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=True)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with an image-pooling branch.

    Args:
        in_ch: input channels (res5).
        out_ch: channels of every branch and of the output.
        rates: dilation rates of the three 3×3 branches.
        dropout: dropout after the projection.
    """

    def __init__(
        self, in_ch: int, out_ch: int, rates: tuple[int, ...] = (3, 6, 9), dropout: float = 0.5
    ) -> None:
        super().__init__()
        branches = [_conv_bn_relu(in_ch, out_ch, 1)]
        branches += [_conv_bn_relu(in_ch, out_ch, 3, dilation=rate) for rate in rates]
        branches.append(_ImagePooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B,in_ch,h,w]. Returns: [B,out_ch,h,w]."""
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class SinglePanopticDecoder(nn.Module):
    """ASPP on res5, then top-down fusion with res4, res3 and res2 (output stride 4).

    Args:
        in_channels: channels of res2..res5, keyed by name.
        widths: the decoder's widths.
        aspp_rates: ASPP dilation rates.
    """

    skip_keys = ("res4", "res3", "res2")

    def __init__(
        self,
        in_channels: dict[str, int],
        widths: DecoderWidths,
        aspp_rates: tuple[int, ...] = (3, 6, 9),
    ) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels["res5"], widths.aspp_channels, aspp_rates)
        self.project = nn.ModuleList(
            _conv_bn_relu(in_channels[key], channels, 1)
            for key, channels in zip(self.skip_keys, widths.project_channels, strict=True)
        )
        running = [widths.aspp_channels] + [widths.decoder_channels] * 2
        self.fuse = nn.ModuleList(
            separable_conv(previous + channels, widths.decoder_channels)
            for previous, channels in zip(running, widths.project_channels, strict=True)
        )
        self.out_channels = widths.decoder_channels

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Args: features res2..res5. Returns: [B,decoder_channels,H/4,W/4]."""
        x = self.aspp(features["res5"])
        for key, project, fuse in zip(self.skip_keys, self.project, self.fuse, strict=True):
            skip = project(features[key])
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = fuse(torch.cat([x, skip], dim=1))
        return x


def init_decoder(module: nn.Module, std: float = 0.001) -> None:
    """Panoptic-DeepLab decoder init: conv weights normal(0, std), BN weight 1 and bias 0.

    Conv biases (only the final 1×1 convs have one) keep PyTorch's default init, as in the
    official code.
    """
    for child in module.modules():
        if isinstance(child, nn.Conv2d):
            nn.init.normal_(child.weight, std=std)
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)
