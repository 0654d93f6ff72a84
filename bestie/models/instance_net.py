"""The instance network: semantic logits, class-wise centre heatmaps and offsets (SPEC §3).

Every variant maps an image batch [B,3,H,W] to a dict of stride-4 predictions upsampled
bilinearly to the input size (or ``target_shape``):

- ``seg``    [B,C+1,H,W] semantic logits (0 = background, c+1 = class c);
- ``center`` [B,C,H,W]   class-wise centre heatmaps, raw regression (no sigmoid);
- ``offset`` [B,2,H,W]   (dy, dx) = centre − pixel in input pixels, raw.

Variants (``backbone``):

- ``hrnet_w48`` / ``hrnet_w32`` (the paper's results, SPEC §3.1): the stride-4 branch of
  HRNet and three plain heads (3×3 conv to 256 with bias, ReLU, 1×1 conv); no ASPP or
  decoder; upsampling with align_corners=False; every conv normal(0, 0.001), zero bias.
  Batch-norm momentum stays 0.1: the official code does not apply ``--bn_momentum`` to HRNet.
- ``resnet50`` / ``resnet101`` (SPEC §3.2): Panoptic-DeepLab dual decoder
  (:mod:`bestie.models.panoptic_deeplab`); upsampling with align_corners=True; every BN
  momentum (backbone included) set to ``bn_momentum``.
- ``small``: the same Panoptic-DeepLab structure on :class:`~bestie.models.backbones.SmallResNet`
  with reduced widths (:data:`~bestie.models.panoptic_deeplab.SMALL`), for CPU runs.

Reference: clovaai/BESTIE@f27eb69 models/hrnet.py (heads, init) and models/panoptic_deeplab.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bestie.models.backbones import (
    HRNetStride4,
    build_backbone,
    load_backbone_weights,
    set_bn_momentum,
)
from bestie.models.panoptic_deeplab import (
    PANOPTIC_DEEPLAB,
    SMALL,
    PanopticDeepLabWidths,
    SinglePanopticDecoder,
    init_decoder,
    make_head,
)

__all__ = ["HRNetInstanceNet", "PanopticDeepLabNet", "build_instance_net"]

INSTANCE_BACKBONES = ("resnet50", "resnet101", "hrnet_w48", "hrnet_w32", "small")


def _upsample(
    outputs: dict[str, torch.Tensor], size: tuple[int, int], align_corners: bool
) -> dict[str, torch.Tensor]:
    return {
        key: F.interpolate(value, size=size, mode="bilinear", align_corners=align_corners)
        for key, value in outputs.items()
    }


def _output_size(x: torch.Tensor, target_shape: tuple[int, int] | None) -> tuple[int, int]:
    if target_shape is None:
        return int(x.shape[-2]), int(x.shape[-1])
    height, width = target_shape[-2:]
    return int(height), int(width)


class PanopticDeepLabNet(nn.Module):
    """A ResNet-like backbone with the Panoptic-DeepLab semantic and instance decoders.

    Args:
        backbone: returns res2..res5 and has a ``channels`` dict (ResNetFeatures, SmallResNet).
        num_classes: C, the number of foreground classes.
        widths: decoder and head widths.
    """

    align_corners = True

    def __init__(self, backbone: nn.Module, num_classes: int, widths: PanopticDeepLabWidths):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        channels = backbone.channels
        self.semantic_decoder = SinglePanopticDecoder(channels, widths.semantic, widths.aspp_rates)
        self.instance_decoder = SinglePanopticDecoder(channels, widths.instance, widths.aspp_rates)
        semantic_ch = widths.semantic.decoder_channels
        instance_ch = widths.instance.decoder_channels
        self.semantic_head = make_head(semantic_ch, widths.semantic_head, num_classes + 1)
        self.center_head = make_head(instance_ch, widths.center_head, num_classes)
        self.offset_head = make_head(instance_ch, widths.offset_head, 2)
        for module in (self.semantic_decoder, self.instance_decoder):
            init_decoder(module)
        for module in (self.semantic_head, self.center_head, self.offset_head):
            init_decoder(module)

    def forward(
        self, x: torch.Tensor, target_shape: tuple[int, int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Args: x [B,3,H,W]; target_shape (H', W') or None (= input size).

        Returns: seg [B,C+1,H',W'], center [B,C,H',W'], offset [B,2,H',W'] (dy, dx).
        """
        features = self.backbone(x)
        semantic = self.semantic_decoder(features)
        instance = self.instance_decoder(features)
        outputs = {
            "seg": self.semantic_head(semantic),
            "center": self.center_head(instance),
            "offset": self.offset_head(instance),
        }
        return _upsample(outputs, _output_size(x, target_shape), self.align_corners)


def _plain_head(in_ch: int, out_ch: int, hidden: int = 256) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_ch, 1)
    )


class HRNetInstanceNet(nn.Module):
    """HRNet stride-4 branch with three plain heads (SPEC §3.1).

    Args:
        backbone: an :class:`~bestie.models.backbones.HRNetStride4`.
        num_classes: C, the number of foreground classes.
    """

    align_corners = False

    def __init__(self, backbone: HRNetStride4, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        channels = backbone.out_channels
        self.semantic_head = _plain_head(channels, num_classes + 1)
        self.center_head = _plain_head(channels, num_classes)
        self.offset_head = _plain_head(channels, 2)
        # As the official code: every conv (backbone included) normal(0, 0.001) with zero bias,
        # BN weight 1 and bias 0; an ImageNet file then overwrites the backbone.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self, x: torch.Tensor, target_shape: tuple[int, int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Args: x [B,3,H,W]; target_shape (H', W') or None (= input size).

        Returns: seg [B,C+1,H',W'], center [B,C,H',W'], offset [B,2,H',W'] (dy, dx).
        """
        features = self.backbone(x)
        outputs = {
            "seg": self.semantic_head(features),
            "center": self.center_head(features),
            "offset": self.offset_head(features),
        }
        return _upsample(outputs, _output_size(x, target_shape), self.align_corners)


def build_instance_net(
    backbone: str, num_classes: int, *, weights: str = "", bn_momentum: float = 0.01
) -> nn.Module:
    """Build the instance network (random init, then ImageNet backbone weights from a file).

    Args:
        backbone: ``resnet50``, ``resnet101``, ``hrnet_w48``, ``hrnet_w32`` or ``small``.
        num_classes: C, the number of foreground classes (20 for VOC).
        weights: path to an ImageNet state dict for the backbone, in the library's key names
            (see :mod:`bestie.models.backbones`); ``""`` keeps the random init.
        bn_momentum: batch-norm momentum for the ResNet/small variants (SPEC §3.2: 0.01);
            HRNet keeps 0.1 as in the official code.

    Returns:
        the network; ``forward(x, target_shape=None)`` returns dict(seg, center, offset).

    Raises:
        ValueError: unknown backbone, ``num_classes < 1``, or a weights file matching nothing.
        FileNotFoundError: ``weights`` names a missing file.
    """
    if backbone not in INSTANCE_BACKBONES:
        raise ValueError(
            f"instance.backbone: unknown backbone {backbone!r}; expected one of "
            f"{', '.join(INSTANCE_BACKBONES)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    trunk = build_backbone(backbone)
    net: HRNetInstanceNet | PanopticDeepLabNet
    if isinstance(trunk, HRNetStride4):
        net = HRNetInstanceNet(trunk, num_classes)
    else:
        widths = SMALL if backbone == "small" else PANOPTIC_DEEPLAB
        net = PanopticDeepLabNet(trunk, num_classes, widths)
        set_bn_momentum(net, bn_momentum)
    # Loaded last, over the random init (the official order: init everything, then load).
    if weights:
        load_backbone_weights(net.backbone, weights, what="instance.weights")
    return net
