"""The semantic segmentation network retrained on pseudo masks in the WSSS stage.

The official pipeline consumes WSSS maps made by a DeepLab retrained on PMM pseudo masks
(SPEC §0, §9); the paper's maps come from DeepLab-V2. We retrain torchvision's DeepLabV3
(ResNet-50/101, output stride 8, ASPP rates 12/24/36) from a local ImageNet backbone file, or,
for CPU runs, a small DeepLabV3+-like net: the ``small`` ResNet with one Panoptic-DeepLab
semantic decoder (ASPP on res5, top-down fusion to stride 4) and head.

Reference: torchvision.models.segmentation.deeplabv3 (used as a library, not copied).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from bestie.models.backbones import SmallResNet, load_backbone_weights
from bestie.models.panoptic_deeplab import SMALL, SinglePanopticDecoder, init_decoder, make_head

__all__ = ["DeepLabV3", "SmallDeepLab", "build_semantic_net"]

SEMANTIC_BACKBONES = ("resnet50", "resnet101", "small")


class DeepLabV3(nn.Module):
    """torchvision DeepLabV3 (no auxiliary head) returning its logits as a tensor.

    Args:
        depth: ResNet depth, 50 or 101.
        num_classes_with_bg: C+1 output channels.
    """

    def __init__(self, depth: int, num_classes_with_bg: int) -> None:
        super().__init__()
        builders = {
            50: torchvision.models.segmentation.deeplabv3_resnet50,
            101: torchvision.models.segmentation.deeplabv3_resnet101,
        }
        if depth not in builders:
            raise ValueError(f"DeepLabV3 depth must be 50 or 101, got {depth}")
        net = builders[depth](
            weights=None, weights_backbone=None, num_classes=num_classes_with_bg, aux_loss=False
        )
        # The backbone keeps torchvision's ResNet names (conv1, layer1, ...; no fc), so an
        # ImageNet file loads into it directly.
        self.backbone = net.backbone
        self.classifier = net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B,3,H,W]. Returns: logits [B,C+1,H,W] (bilinear, align_corners=False)."""
        logits = self.classifier(self.backbone(x)["out"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SmallDeepLab(nn.Module):
    """The ``small`` ResNet + one Panoptic-DeepLab semantic decoder and head (CPU-sized).

    Args:
        num_classes_with_bg: C+1 output channels.
    """

    def __init__(self, num_classes_with_bg: int) -> None:
        super().__init__()
        self.backbone = SmallResNet()
        self.decoder = SinglePanopticDecoder(
            self.backbone.channels, SMALL.semantic, SMALL.aspp_rates
        )
        self.head = make_head(self.decoder.out_channels, SMALL.semantic_head, num_classes_with_bg)
        init_decoder(self.decoder)
        init_decoder(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B,3,H,W]. Returns: logits [B,C+1,H,W] (bilinear, align_corners=False)."""
        logits = self.head(self.decoder(self.backbone(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_semantic_net(backbone: str, num_classes_with_bg: int, *, weights: str = "") -> nn.Module:
    """Build the WSSS semantic segmentation network.

    Args:
        backbone: ``resnet50``, ``resnet101`` (torchvision DeepLabV3) or ``small``.
        num_classes_with_bg: C+1 (background is channel 0).
        weights: path to an ImageNet ResNet state dict in torchvision key names (e.g.
            ``resnet50-19c8e357.pth``), or, for ``small``, a file saved from its backbone;
            ``""`` keeps the random init.

    Returns:
        the network; ``forward(x [B,3,H,W]) -> logits [B,C+1,H,W]``.

    Raises:
        ValueError: unknown backbone, fewer than 2 classes, or a weights file matching nothing.
        FileNotFoundError: ``weights`` names a missing file.
    """
    if backbone not in SEMANTIC_BACKBONES:
        raise ValueError(
            f"wsss.backbone: unknown backbone {backbone!r}; expected one of "
            f"{', '.join(SEMANTIC_BACKBONES)}"
        )
    if num_classes_with_bg < 2:
        raise ValueError(f"num_classes_with_bg must be >= 2, got {num_classes_with_bg}")
    net: DeepLabV3 | SmallDeepLab
    if backbone == "small":
        net = SmallDeepLab(num_classes_with_bg)
    else:
        net = DeepLabV3(int(backbone.removeprefix("resnet")), num_classes_with_bg)
    if weights:
        load_backbone_weights(net.backbone, weights, what="wsss.weights")
    return net
