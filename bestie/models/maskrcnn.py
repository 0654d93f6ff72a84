"""Mask R-CNN (ResNet-50 FPN) for the refinement stage and the fully supervised oracle.

The network is torchvision's ``maskrcnn_resnet50_fpn`` architecture, assembled from its public
parts (``resnet_fpn_backbone`` + ``MaskRCNN``) so that the BatchNorm type follows where the
weights come from, as torchvision's builder does: starting from local weights files
(``maskrcnn.weights`` or ``maskrcnn.backbone_weights``), BatchNorm is frozen and only the last
``trainable_layers`` ResNet stages train; from a random init every stage trains with ordinary
BatchNorm. The state-dict keys equal ``maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None)``'s, so a torchvision COCO checkpoint loads by name. Nothing downloads.

I/O contract (torchvision's ``MaskRCNN``): in training, ``model(images, targets)`` takes a
list of float [3, H, W] images in [0, 1] and a list of target dicts (``boxes`` float [K, 4]
as (x1, y1, x2, y2) pixels, ``labels`` int64 [K] in 1..C, 0 being background, ``masks``
uint8 [K, H, W]) and returns a dict of loss tensors; in eval mode ``model(images)`` returns per
image ``boxes``, ``labels``, ``scores`` and ``masks`` float [N, 1, H, W] probabilities at the
input size. :func:`predict_instances` converts that to :class:`~bestie.structures.Instances`.

Reference: pytorch/vision torchvision/models/detection/mask_rcnn.py (``maskrcnn_resnet50_fpn``,
the train/eval contract) and references/detection/train.py (model construction).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from bestie.models.weights import load_into, load_state_dict_file
from bestie.structures import Instances

__all__ = ["MASK_THRESHOLD", "build_maskrcnn", "maskrcnn_metadata", "predict_instances"]

LOG = logging.getLogger(__name__)
FPN_LEVELS = 5  # P2-P6: one anchor size per level
ASPECT_RATIOS = (0.5, 1.0, 2.0)
MASK_THRESHOLD = 0.5  # mask probability at which a pixel belongs to the instance
BACKBONES = ("resnet50", "resnet18", "resnet34")
FPN_CHANNELS = 256  # torchvision's FPN width; its box head has 4x as many features (1024)
BOX_POOL = 7  # RoIAlign output side of the box head


def build_maskrcnn(
    num_classes: int,
    *,
    backbone: str = "resnet50",
    min_size: int = 800,
    max_size: int = 1333,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    roi_batch_size: int = 512,
    fpn_channels: int = FPN_CHANNELS,
    weights: str = "",
    backbone_weights: str = "",
    trainable_layers: int = 3,
    frozen_bn: bool | None = None,
) -> MaskRCNN:
    """A ResNet-50 FPN Mask R-CNN with C + 1 classes (background first).

    Args:
        num_classes: C, the number of object classes (labels 1..C; 0 is background).
        backbone: ``resnet50`` (the paper's) or a smaller torchvision ResNet (``resnet18``,
            ``resnet34``) under the same FPN and heads, for CPU runs.
        min_size, max_size: torchvision's resize bounds (shorter side, longer side cap).
        anchor_sizes: one anchor size in pixels per FPN level (5 levels, P2..P6), each with
            aspect ratios 0.5, 1, 2. torchvision's 32..512 suit COCO-sized objects.
        roi_batch_size: RoIs sampled per image for the box and mask heads in training.
        fpn_channels: width of the FPN, the RPN and the mask head convs; the box head's two
            fully connected layers get 4x as many features. torchvision's 256 (and its state
            dict keys and shapes) by default; 64 costs a quarter of the RoI-head time on CPU.
        weights: path of a full Mask R-CNN state dict (e.g. torchvision's COCO model);
            tensors whose shapes differ (the class-specific heads when C differs) keep their
            initial values.
        backbone_weights: path of an ImageNet state dict of ``backbone`` (torchvision keys).
        trainable_layers: ResNet stages (0..5) trained when starting from a weights file.
        frozen_bn: FrozenBatchNorm2d (True) or BatchNorm2d (False); None decides by whether
            a weights file is given. Pass the stored value when rebuilding a trained model.

    Returns:
        the model, in training mode, on the CPU.

    Raises:
        ValueError: both weights files given, a wrong number of anchor sizes, a weights file
            whose tensors do not match.
        FileNotFoundError: a weights file that was asked for does not exist.
    """
    if weights and backbone_weights:
        raise ValueError(
            "give maskrcnn.weights (a full model) or maskrcnn.backbone_weights, not both"
        )
    if len(anchor_sizes) != FPN_LEVELS or min(anchor_sizes) <= 0:
        raise ValueError(
            f"maskrcnn.anchor_sizes: need {FPN_LEVELS} positive sizes (one per FPN level), "
            f"got {list(anchor_sizes)}"
        )
    if backbone not in BACKBONES:
        raise ValueError(f"maskrcnn.backbone must be one of {BACKBONES}, got {backbone!r}")
    if fpn_channels <= 0:
        raise ValueError(f"maskrcnn.fpn_channels must be positive, got {fpn_channels}")
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"maskrcnn.trainable_layers must lie in 0..5, got {trainable_layers}")
    pretrained = bool(weights or backbone_weights)
    frozen = pretrained if frozen_bn is None else frozen_bn
    body = resnet_fpn_backbone(
        backbone_name=backbone,
        weights=None,
        norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d,
        trainable_layers=trainable_layers if pretrained else 5,
    )
    anchors = AnchorGenerator(
        sizes=tuple((int(size),) for size in anchor_sizes),
        aspect_ratios=(ASPECT_RATIOS,) * FPN_LEVELS,
    )
    # torchvision builds its own heads (and keeps its FPN) at the default width
    heads = {} if fpn_channels == FPN_CHANNELS else _narrow(body, fpn_channels, num_classes + 1)
    model = MaskRCNN(
        body,
        num_classes=None if heads else num_classes + 1,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        box_batch_size_per_image=roi_batch_size,
        **heads,
    )
    if backbone_weights:
        state = load_state_dict_file(backbone_weights, what="maskrcnn.backbone_weights")
        load_into(model.backbone.body, state, what="maskrcnn.backbone_weights")
    if weights:
        state = load_state_dict_file(weights, what="maskrcnn.weights")
        load_into(model, state, what="maskrcnn.weights")
    return model


def _narrow(body: nn.Module, channels: int, classes: int) -> dict[str, nn.Module]:
    """Give ``body`` an FPN of ``channels`` outputs; the matching heads as MaskRCNN kwargs.

    The same modules as torchvision's defaults (the keys of the state dict are unchanged),
    each with ``channels`` in place of 256 and a box head of ``4 * channels`` features.
    """
    widths = [int(block[0].in_channels) for block in body.fpn.inner_blocks]
    body.fpn = FeaturePyramidNetwork(widths, channels, extra_blocks=LastLevelMaxPool())
    body.out_channels = channels
    features = 4 * channels
    return {
        "box_head": TwoMLPHead(channels * BOX_POOL**2, features),
        "box_predictor": FastRCNNPredictor(features, classes),
        "mask_head": MaskRCNNHeads(channels, (channels,) * 4, 1),
        "mask_predictor": MaskRCNNPredictor(channels, channels, classes),
    }


def maskrcnn_metadata(model: MaskRCNN, categories: Sequence[str], **extra: Any) -> dict[str, Any]:
    """Plain metadata that rebuilds ``model`` with :func:`build_maskrcnn` (for ``save_model``)."""
    anchors = model.rpn.anchor_generator.sizes
    frozen = any(isinstance(module, FrozenBatchNorm2d) for module in model.backbone.modules())
    transform = model.transform
    return {
        "architecture": "maskrcnn_resnet50_fpn",
        "backbone": _backbone_name(model),
        "num_classes": len(categories),
        "categories": list(categories),
        "min_size": int(transform.min_size[0]),
        "max_size": int(transform.max_size),
        "anchor_sizes": [int(level[0]) for level in anchors],
        "roi_batch_size": int(model.roi_heads.fg_bg_sampler.batch_size_per_image),
        "fpn_channels": int(model.backbone.out_channels),
        "frozen_bn": bool(frozen),
        **extra,
    }


def _backbone_name(model: MaskRCNN) -> str:
    """resnet50 (bottleneck blocks, 3-4-6-3) or resnet18/34 (basic blocks, 2-2-2-2/3-4-6-3)."""
    body = model.backbone.body
    if hasattr(body.layer1[0], "conv3"):
        return "resnet50"
    return "resnet18" if len(body.layer3) == 2 else "resnet34"


def rebuild_maskrcnn(state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> MaskRCNN:
    """The trained model of a model file (``load_model``'s state dict and metadata)."""
    model = build_maskrcnn(
        int(metadata["num_classes"]),
        backbone=str(metadata.get("backbone", "resnet50")),
        min_size=int(metadata["min_size"]),
        max_size=int(metadata["max_size"]),
        anchor_sizes=[int(size) for size in metadata["anchor_sizes"]],
        roi_batch_size=int(metadata["roi_batch_size"]),
        fpn_channels=int(metadata.get("fpn_channels", FPN_CHANNELS)),
        frozen_bn=bool(metadata["frozen_bn"]),
    )
    model.load_state_dict(state)
    return model


@torch.no_grad()
def predict_instances(
    model: MaskRCNN,
    image: np.ndarray,
    device: torch.device,
    *,
    mask_threshold: float = MASK_THRESHOLD,
) -> Instances:
    """Instances of one image predicted by a Mask R-CNN in eval mode.

    Args:
        model: the network (put in eval mode here).
        image: uint8 RGB [H, W, 3].
        device: where ``model`` lives.
        mask_threshold: mask probability at and above which a pixel is in the instance.

    Returns:
        masks bool [N, H, W] at the image size, 0-based labels int64 [N], scores float32 [N];
        detections whose mask is empty after thresholding are dropped.
    """
    model.eval()
    height, width = image.shape[:2]
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    tensor = tensor.to(device, dtype=torch.float32).div_(255.0)
    output = model([tensor])[0]
    masks = (output["masks"][:, 0] >= mask_threshold).cpu().numpy()
    labels = output["labels"].cpu().numpy().astype(np.int64) - 1
    scores = output["scores"].cpu().numpy().astype(np.float32)
    keep = masks.any(axis=(1, 2))
    if not keep.any():
        return Instances.empty(height, width, with_scores=True)
    return Instances(masks[keep], labels[keep], scores[keep])
