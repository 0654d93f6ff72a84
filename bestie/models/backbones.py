"""Backbones of the instance and semantic networks (SPEC §3.1, §3.2).

Every backbone is built with random weights (torchvision ``weights=None``, timm
``pretrained=False``); ImageNet weights come only from a local file, loaded by
:func:`bestie.models.weights.load_into` into the backbone module itself, so the file's key
names must be the library's own:

- ``resnet50`` / ``resnet101``: torchvision names (``conv1.weight``, ``layer1.0.conv1.weight``,
  ...), i.e. the files ``resnet50-19c8e357.pth`` / ``resnet101-5d3b4d8f.pth`` (also the newer
  ``resnet50-0676ba61.pth``). The ``fc.*`` tensors are reported as unused.
- ``hrnet_w48`` / ``hrnet_w32``: timm names (``conv1.weight``, ``layer1.0.conv1.weight``,
  ``stage2.0.branches.0.0.conv1.weight``, ``stage4.2.fuse_layers.0.1.0.weight``, ...). These
  are the names of the original HRNet code (timm's copy keeps them), which the official
  files ``hrnet_w48-8ef0771d.pth`` / ``hrnet_w32-36af842e.pth`` (deep-high-resolution-net's
  ImageNet files, also hosted by OpenMMLab) and timm's own ``hrnet_w48.ms_in1k``
  ``model.safetensors`` use; a classification head in the file (``incre_modules``,
  ``downsamp_modules``, ``final_layer``, ``classifier``) and the last module's
  low-resolution fuse layers are reported as unused. A partial match is logged as a warning
  with the missing key names.
- ``small``: this module's own names (no ImageNet file exists; use a file saved from it).

Reference: clovaai/BESTIE@f27eb69 models/resnet.py and models/hrnet.py (re-implemented on
torchvision/timm).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from bestie.models.weights import load_into, load_state_dict_file

__all__ = [
    "FEATURE_KEYS",
    "HRNetStride4",
    "ResNetFeatures",
    "SmallResNet",
    "build_backbone",
    "load_backbone_weights",
    "set_bn_momentum",
]

# The multi-scale features every ResNet-like backbone returns (strides 4, 8, 16, 32).
FEATURE_KEYS = ("res2", "res3", "res4", "res5")


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without ``avgpool``/``fc``, returning ``res2``..``res5``.

    The child modules keep torchvision's names, so a torchvision ImageNet state dict loads
    into this module directly.

    Args:
        depth: 50 or 101 (no dilation: output stride 32, as the official code).
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        builders = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
        if depth not in builders:
            raise ValueError(f"ResNet depth must be 50 or 101, got {depth}")
        net = builders[depth](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.channels = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x [B,3,H,W]. Returns: res2..res5, [B,C_k,H/s,W/s] for s = 4, 8, 16, 32."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        res2 = self.layer1(x)
        res3 = self.layer2(res2)
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        return {"res2": res2, "res3": res3, "res4": res4, "res5": res5}


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _basic_stage(in_ch: int, width: int, count: int, stride: int) -> nn.Sequential:
    """``count`` torchvision BasicBlocks; the first one strides and projects the shortcut."""
    downsample = None
    if stride != 1 or in_ch != width:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
        )
    BasicBlock = torchvision.models.resnet.BasicBlock
    layers = [BasicBlock(in_ch, width, stride, downsample)]
    layers += [BasicBlock(width, width) for _ in range(count - 1)]
    return nn.Sequential(*layers)


class SmallResNet(nn.Module):
    """A tiny ResNet (one torchvision BasicBlock per stage) for CPU runs on synthetic data.

    Stem: two 3×3 stride-2 convs (stride 4), then four stages of BasicBlocks at strides
    4, 8, 16, 32. With the default widths (32, 64, 128, 192) it has 0.89 M parameters
    (1.70 M with the reduced Panoptic-DeepLab decoders of the ``small`` instance network).

    Args:
        widths: channels of res2..res5.
        blocks: BasicBlocks per stage.
    """

    def __init__(
        self, widths: tuple[int, ...] = (32, 64, 128, 192), blocks: tuple[int, ...] = (1, 1, 1, 1)
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError(
                f"SmallResNet needs 4 widths and 4 block counts, got {widths}, {blocks}"
            )
        self.stem = nn.Sequential(
            _conv_bn_relu(3, widths[0] // 2, 2), _conv_bn_relu(widths[0] // 2, widths[0], 2)
        )
        in_widths = (widths[0], *widths[:-1])
        stages = [
            _basic_stage(in_ch, width, count, stride=1 if index == 0 else 2)
            for index, (in_ch, width, count) in enumerate(
                zip(in_widths, widths, blocks, strict=True)
            )
        ]
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = dict(zip(FEATURE_KEYS, widths, strict=True))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x [B,3,H,W]. Returns: res2..res5, [B,C_k,H/s,W/s] for s = 4, 8, 16, 32."""
        res2 = self.layer1(self.stem(x))
        res3 = self.layer2(res2)
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        return {"res2": res2, "res3": res3, "res4": res4, "res5": res5}


class HRNetStride4(nn.Module):
    """The HRNet trunk returning only its stride-4 (highest-resolution) branch (SPEC §3.1).

    Built from timm's ``hrnet_w48``/``hrnet_w32`` with the default (non-``incre``) features, so
    the output is the raw 48/32-channel branch of the last stage: no HRNet-V2 concatenation,
    no classification head. As in the pose-estimation HRNet the official code uses, the last
    module of stage 4 fuses into the high-resolution branch only (its other fuse layers are
    removed, so every parameter receives a gradient under DDP). Batch-norm momentum stays
    timm's 0.1, as in the official code.

    Args:
        name: ``"hrnet_w48"`` or ``"hrnet_w32"``.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        import timm

        if name not in ("hrnet_w48", "hrnet_w32"):
            raise ValueError(f"unknown HRNet {name!r}; expected hrnet_w48 or hrnet_w32")
        self.net = timm.create_model(
            name, pretrained=False, features_only=True, feature_location="", out_indices=(1,)
        )
        last = self.net.stage4[-1]
        last.fuse_layers = last.fuse_layers[:1]
        self.out_channels = int(name.removeprefix("hrnet_w"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B,3,H,W]. Returns: [B,48 or 32,H/4,W/4] (rounded up)."""
        (out,) = self.net(x)
        return out


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the momentum of every batch-norm layer under ``module`` (SPEC §3.2: 0.01)."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.momentum = momentum


def build_backbone(name: str) -> nn.Module:
    """Build a randomly initialised backbone by name.

    Args:
        name: ``resnet50``, ``resnet101``, ``small`` (dict of res2..res5 features, with a
            ``channels`` attribute) or ``hrnet_w48``/``hrnet_w32`` (one stride-4 tensor, with an
            ``out_channels`` attribute).

    Raises:
        ValueError: unknown name.
    """
    if name in ("resnet50", "resnet101"):
        return ResNetFeatures(int(name.removeprefix("resnet")))
    if name == "small":
        return SmallResNet()
    if name in ("hrnet_w48", "hrnet_w32"):
        return HRNetStride4(name)
    raise ValueError(
        f"unknown backbone {name!r}; expected resnet50, resnet101, hrnet_w48, hrnet_w32 or small"
    )


def load_backbone_weights(backbone: nn.Module, path: str, *, what: str) -> None:
    """Load an ImageNet state dict file into a backbone from :func:`build_backbone`.

    The file's key names are the library's own (see the module docstring): torchvision names
    for ResNets, timm names for HRNets, this module's names for ``small``.

    Args:
        backbone: the receiving backbone.
        path: the weights file.
        what: the config key that named the file (for messages), e.g. ``"instance.weights"``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file matches none of the backbone's tensors.
    """
    target = backbone.net if isinstance(backbone, HRNetStride4) else backbone
    load_into(target, load_state_dict_file(path, what=what), what=what)
