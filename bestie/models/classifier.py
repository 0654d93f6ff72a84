"""The CAM/PAM image classifier (paper §3.1, appendix; SPEC §1.1).

A VGG16 trunk with pool4 replaced by a 3×3 stride-1 max-pool and dilated conv5 (output
stride 8, no pool5), three extra 3×3 convs, a 1×1 conv to the class maps and global average
pooling. With ``pam_layers=[1, 2, 3]`` each extra conv is followed by a Peak Attention
Module (PAM); with ``pam_layers=[]`` it is the plain CAM baseline (ReLU after each extra
conv). The trunk's module indices are those of torchvision's ``vgg16().features``, so
torchvision's ``vgg16-397923af.pth`` loads into it (the FC layers and pool5 are ignored).

Reference: clovaai/BESTIE PAM/models/classifier.py (``PAM``, ``VGG``, ``make_layers('D1')``),
https://github.com/clovaai/BESTIE/blob/e2f377d4da49fc57d06ace7ad2af896558008e82/PAM/models/classifier.py
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bestie.models.weights import load_into, load_state_dict_file
from bestie.sections import ClassifierConfig

__all__ = [
    "PAM",
    "Classifier",
    "build_classifier",
    "classifier_metadata",
    "classifier_from_metadata",
    "load_classifier",
    "parameter_groups",
]

# VGG16 conv widths per block; "M" = 2×2/2 max-pool, "N" = 3×3/1 max-pool (pool4's stand-in).
_TRUNK = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "N", 512, 512, 512)
_DILATED_FROM = 13  # entries of _TRUNK from here on (conv5_1..3) use dilation 2
# The four parameter groups and their official learning-rate multipliers (SPEC §1.2).
GROUPS = ("backbone_weight", "backbone_bias", "extra_weight", "extra_bias")
LR_MULTIPLIERS = (1.0, 2.0, 10.0, 20.0)


def scaled(channels: int, width: float) -> int:
    """A channel count scaled by the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


class PAM(nn.Module):
    """Peak Attention Module: keep only the strong responses of each channel.

    ``y = relu(x)`` then every element with ``y < alpha * max_hw(y)`` (strict, per sample and
    channel) is set to 0; the rest is kept unchanged. No parameters; active in train and eval.
    """

    def __init__(self, alpha: float = 0.7) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"classifier.pam_alpha must lie in [0, 1], got {alpha}")
        self.alpha = float(alpha)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features [B, K, h, w]. Returns: [B, K, h, w], non-negative."""
        features = F.relu(features)
        peak = features.amax(dim=(2, 3), keepdim=True)  # the "selector"
        return torch.where(features < self.alpha * peak, torch.zeros_like(features), features)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def _make_trunk(width: float, batch_norm: bool) -> nn.Sequential:
    """VGG16 ``features`` up to conv5_3's ReLU (indices 0..29), torchvision numbering.

    With ``batch_norm`` each ReLU slot holds ``Sequential(BatchNorm2d, ReLU)``, so the convs
    keep their torchvision indices (and the extra activations become (BN, ReLU/PAM)).
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for position, entry in enumerate(_TRUNK):
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif entry == "N":
            layers.append(nn.MaxPool2d(kernel_size=3, stride=1, padding=1))
        else:
            dilation = 2 if position >= _DILATED_FROM else 1
            out_channels = scaled(int(entry), width)
            layers.append(
                nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
            )
            relu = nn.ReLU(inplace=True)
            layers.append(nn.Sequential(nn.BatchNorm2d(out_channels), relu) if batch_norm else relu)
            in_channels = out_channels
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """VGG16-based CAM/PAM multi-label classifier.

    Args:
        num_classes: C, the number of foreground classes.
        width: channel multiplier of every conv (1.0 = VGG16).
        pam_layers: which extra convs (1, 2, 3) are followed by PAM; the others by ReLU.
        pam_alpha: the PAM controller alpha.
        batch_norm: batch normalisation after every 3×3 conv (trunk and extra, before the
            ReLU/PAM). Not in the official model: without it a random-init network trains
            slowly and its un-normalised extra convs die (all ReLUs off, constant output)
            at useful learning rates; the synthetic CPU config uses it. The ImageNet
            weights are for the plain trunk.

    Input: images [B, 3, H, W], ImageNet-normalised. Output of ``forward``: ``(logits [B, C],
    class_maps [B, C, h, w])`` with h = floor(floor(floor(H/2)/2)/2) (output stride 8:
    321 -> 160 -> 80 -> 40), likewise w. ``class_maps`` are the raw
    ``extra_conv4`` outputs (before any ReLU); ``logits`` are their spatial mean.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        width: float = 1.0,
        pam_layers: Sequence[int] = (1, 2, 3),
        pam_alpha: float = 0.7,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"classifier: num_classes must be >= 1, got {num_classes}")
        if width <= 0:
            raise ValueError(f"classifier.width must be > 0, got {width}")
        bad = sorted(set(pam_layers) - {1, 2, 3})
        if bad:
            raise ValueError(f"classifier.pam_layers may only hold 1, 2, 3; got {bad}")
        self.num_classes = num_classes
        self.width = float(width)
        self.pam_layers = tuple(sorted(set(pam_layers)))
        self.pam_alpha = float(pam_alpha)
        self.batch_norm = bool(batch_norm)
        self.features = _make_trunk(width, self.batch_norm)
        channels = scaled(512, width)
        self.extra_conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.extra_conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.extra_conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.extra_conv4 = nn.Conv2d(channels, num_classes, 1)
        activations: list[nn.Module] = [
            PAM(pam_alpha) if layer in self.pam_layers else nn.ReLU() for layer in (1, 2, 3)
        ]
        if self.batch_norm:
            activations = [nn.Sequential(nn.BatchNorm2d(channels), act) for act in activations]
        self.extra_activations = nn.ModuleList(activations)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, sqrt(2 / (k·k·C_out))) weights, zero biases, for every conv.

        This is the official init of the extra convs (std 0.0208 for the 512-wide 3×3 convs);
        we use it for the trunk too when no ImageNet weights are loaded (He init, fan-out).
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: images [B, 3, H, W]. Returns: logits [B, C], class maps [B, C, h, w]."""
        features = self.features(images)
        for conv, activation in zip(
            (self.extra_conv1, self.extra_conv2, self.extra_conv3),
            self.extra_activations,
            strict=True,
        ):
            features = activation(conv(features))
        class_maps = self.extra_conv4(features)
        return class_maps.mean(dim=(2, 3)), class_maps


def parameter_groups(
    model: Classifier, lr: float, multipliers: Sequence[float] = LR_MULTIPLIERS
) -> list[dict]:
    """SGD parameter groups: trunk weights, trunk biases, extra weights, extra biases.

    Args:
        model: the classifier.
        lr: the base learning rate.
        multipliers: the four groups' lr multipliers (official: 1, 2, 10, 20: the extra
            convs are new layers on an ImageNet trunk). BatchNorm parameters count as
            weights/biases of the part they belong to.

    Returns:
        four dicts with ``params``, ``lr``, ``lr_mult`` and ``name`` (in :data:`GROUPS` order).
    """
    if len(multipliers) != len(GROUPS):
        raise ValueError(f"classifier.lr_multipliers needs 4 values, got {list(multipliers)}")
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in GROUPS}
    for name, parameter in model.named_parameters():
        part = "extra" if name.startswith("extra_") else "backbone"
        kind = "bias" if name.endswith("bias") else "weight"
        groups[f"{part}_{kind}"].append(parameter)
    return [
        {"params": params, "lr": lr * mult, "lr_mult": float(mult), "name": name}
        for (name, params), mult in zip(groups.items(), multipliers, strict=True)
    ]


def load_imagenet_trunk(model: Classifier, path: str) -> None:
    """Load torchvision VGG16 ImageNet weights (``vgg16-397923af.pth``) into the trunk.

    Raises:
        ValueError: the model's width is not 1.0, or some trunk conv was not in the file.
        FileNotFoundError: ``path`` does not exist (the message names classifier.weights).
    """
    if model.batch_norm:
        raise ValueError(
            "classifier.weights: ImageNet VGG16 weights are for the plain trunk; set "
            'classifier.batch_norm to false or classifier.weights to ""'
        )
    if model.width != 1.0:
        raise ValueError(
            f"classifier.weights: ImageNet VGG16 weights need classifier.width 1.0, "
            f'got {model.width}; set classifier.weights to "" for a random init'
        )
    state = load_state_dict_file(path, what="classifier.weights")
    missing, _ = load_into(model, state, what="classifier.weights")
    trunk_missing = [key for key in missing if key.startswith("features.")]
    if trunk_missing:
        raise ValueError(
            f"classifier.weights: {path} lacks VGG16 trunk tensors {trunk_missing[:4]}"
        )


def set_pam_alpha(model: nn.Module, alpha: float) -> int:
    """Give every PAM layer of ``model`` the controller ``alpha``; returns how many it has.

    0 turns each PAM into a plain ReLU (every positive response kept).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"cues.pam_alpha must lie in [0, 1] or be -1, got {alpha}")
    layers = [module for module in model.modules() if isinstance(module, PAM)]
    for layer in layers:
        layer.alpha = float(alpha)
    return len(layers)


def build_classifier(cfg: ClassifierConfig, num_classes: int) -> Classifier:
    """The classifier of a config section, with ImageNet trunk weights when configured."""
    model = Classifier(
        num_classes,
        width=cfg.width,
        pam_layers=cfg.pam_layers,
        pam_alpha=cfg.pam_alpha,
        batch_norm=cfg.batch_norm,
    )
    if cfg.weights:
        load_imagenet_trunk(model, cfg.weights)
    return model


def classifier_metadata(model: Classifier) -> dict:
    """Plain-typed architecture description, stored beside the weights in ``model.pt``."""
    return {
        "num_classes": model.num_classes,
        "width": model.width,
        "pam_layers": list(model.pam_layers),
        "pam_alpha": model.pam_alpha,
        "batch_norm": model.batch_norm,
    }


def classifier_from_metadata(metadata: dict) -> Classifier:
    """An (uninitialised-weights) classifier with the architecture of ``metadata``."""
    try:
        return Classifier(
            int(metadata["num_classes"]),
            width=float(metadata["width"]),
            pam_layers=[int(layer) for layer in metadata["pam_layers"]],
            pam_alpha=float(metadata["pam_alpha"]),
            batch_norm=bool(metadata.get("batch_norm", False)),
        )
    except KeyError as error:
        raise ValueError(f"classifier model metadata lacks {error}") from error


def load_classifier(
    path: str | os.PathLike[str], *, pam_alpha: float = -1.0
) -> tuple[Classifier, dict]:
    """A trained classifier from ``classifier/{cam,pam}/model.pt``, on CPU, in eval mode.

    Args:
        path: the model file.
        pam_alpha: the PAM alpha to run with (``cues.pam_alpha``, :func:`set_pam_alpha`);
            -1 keeps the one it was trained with.

    Returns:
        ``(model, metadata)``; metadata holds num_classes, width, pam_layers, pam_alpha (as
        trained), categories, crop (the training crop) and epochs.
    """
    from bestie.engine.checkpoint import load_model

    state, metadata = load_model(path)
    model = classifier_from_metadata(metadata)
    model.load_state_dict(state)
    if pam_alpha != -1.0:
        set_pam_alpha(model, pam_alpha)
    return model.eval(), metadata
