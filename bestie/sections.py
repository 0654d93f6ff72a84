"""The per-stage configuration dataclasses (one frozen dataclass per config section).

Defaults are the official code's values (SPEC.md, section numbers in the comments); the
embedded synthetic config (config/config.yaml) scales them down for a CPU. Every key is
documented in config/config.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class SyntheticConfig:
    """The seeded synthetic scenes (DESIGN.md §5): touching, occluding shapes on clutter."""

    seed: int = 0
    num_train: int = 160
    num_val: int = 40
    height: int = 128
    width: int = 128
    classes: list[str] = field(default_factory=lambda: ["disc", "square", "triangle"])
    max_classes_per_image: int = 2
    min_instances: int = 1
    max_instances: int = 3
    min_size: int = 30
    max_size: int = 46
    touch_probability: float = 0.5
    clutter: int = 6
    hue_jitter: float = 15.0  # instance hue spread (degrees) around its class's hue; <0: any hue
    marker_size: int = 0  # >0: any-hue body with a class-hue disc of this diameter (a "part")


@dataclass(frozen=True)
class CocoDatasetConfig:
    """An images folder + COCO instances JSON per split (any domain, any categories)."""

    train_images: str = ""
    train_json: str = ""
    val_images: str = ""
    val_json: str = ""
    points: Literal["none", "centroid"] = "centroid"


@dataclass(frozen=True)
class VocDatasetConfig:
    """The VOC2012 tree; ``train_list`` may name the SBD train_aug id list."""

    root: str = ""
    train_list: str = "ImageSets/Segmentation/train.txt"
    val_list: str = "ImageSets/Segmentation/val.txt"


@dataclass(frozen=True)
class DatasetConfig:
    """Which data set the experiment runs on."""

    name: Literal["synthetic", "coco", "voc"] = "synthetic"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    coco: CocoDatasetConfig = field(default_factory=CocoDatasetConfig)
    voc: VocDatasetConfig = field(default_factory=VocDatasetConfig)


@dataclass(frozen=True)
class ClassifierConfig:
    """CAM/PAM classifier training (SPEC §1.1-1.2)."""

    width: float = 1.0  # channel multiplier of the VGG16 trunk; 1.0 = VGG16 (ImageNet weights)
    pam_layers: list[int] = field(default_factory=lambda: [1, 2, 3])  # extra convs with PAM
    pam_alpha: float = 0.7
    weights: str = ""  # path to torchvision vgg16-397923af.pth; "" = random init
    resize: int = 384
    crop: int = 321
    batch_size: int = 10
    epochs: int = 15
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: list[int] = field(default_factory=lambda: [5, 10])
    lr_gamma: float = 0.1
    color_jitter: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.3, 0.1])
    checkpoint_every: int = 5  # epochs
    workers: int = 2
    amp: bool = True  # on CUDA only
    # Not official; for training from a random init (the synthetic CPU config):
    batch_norm: bool = False  # BatchNorm after every 3x3 conv (no ImageNet weights then)
    # lr multipliers of trunk weights, trunk biases, extra-conv weights, extra-conv biases
    lr_multipliers: list[float] = field(default_factory=lambda: [1.0, 2.0, 10.0, 20.0])
    # cam: the PAM classifier fine-tunes the trained CAM classifier for pam_epochs epochs at
    # pam_lr (no decay) instead of training from `weights`: on data without ImageNet weights
    # a PAM net trained from a random init barely learns (the CAM net stands in for them).
    pam_init: Literal["", "cam"] = ""
    pam_epochs: int = 6
    pam_lr: float = 1e-3


@dataclass(frozen=True)
class CuesConfig:
    """Instance-cue (peak) extraction (SPEC §1.3)."""

    source: Literal["classifier", "gt_points"] = "classifier"
    classifier: Literal["pam", "cam"] = "pam"
    input_size: int = 321
    flip: bool = True
    smooth_kernel: int = 3
    peak_kernel: int = 15
    top_k: int = 25
    threshold: float = 0.1  # extraction cut
    map_stride: int = 4  # stride of the stored float16 class maps
    # Not official: the PAM alpha at extraction (-1: the classifier's own, as in the official
    # code; 0: PAM layers act as plain ReLUs, a PAM-trained classifier without PAM at inference).
    pam_alpha: float = -1.0


@dataclass(frozen=True)
class WsssConfig:
    """Semantic (WSSS) map generation."""

    method: Literal["cam", "external", "gt"] = "cam"
    external_dir: str = ""
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    background_threshold: float = 0.25  # background where every label-class CAM is below this
    # Not in the paper's WSSS: GrabCut iterations that snap each class's raw CAM mask to the
    # image's colour boundaries (as a dense CRF does in PSA/IRN); 0 = off.
    grabcut_iterations: int = 0
    retrain: bool = True
    backbone: Literal["resnet50", "resnet101", "small"] = "resnet50"
    weights: str = ""
    crop: int = 321
    batch_size: int = 10
    iterations: int = 20000
    lr: float = 1e-3
    checkpoint_every: int = 1000
    amp: bool = True
    # Retraining a segmentation net on the raw CAM masks (bestie.engine.segnet_trainer).
    ignore_border: int = 0  # pixels within this distance of a CAM-mask boundary are ignored (255)
    scale_min: float = 0.5  # random rescale range of the training augmentation
    scale_max: float = 1.5
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    head_lr_mult: float = 10.0  # learning-rate multiplier of everything but the backbone
    poly_power: float = 0.9
    log_every: int = 20
    workers: int = 2
    predict_scales: list[float] = field(default_factory=lambda: [1.0])  # retrained-net inference


@dataclass(frozen=True)
class PseudoConfig:
    """Semantic knowledge transfer (SPEC §2.2-2.3)."""

    cue_threshold: float = 0.7  # keep cues with score > this (the paper's text says 0.5)
    min_area: int = 50
    sigma: float = 6.0


@dataclass(frozen=True)
class InstanceConfig:
    """Instance network and its training recipe (SPEC §2.1, §3, §5.2)."""

    backbone: Literal["resnet50", "resnet101", "hrnet_w48", "hrnet_w32", "small"] = "hrnet_w48"
    weights: str = ""
    iag: bool = True  # instance-aware guidance; false puts weight 1 on every pixel
    crop: int = 416
    scale_min: float = 0.7
    scale_max: float = 1.3
    batch_size: int = 16
    iterations: int = 50000
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_iterations: int = 2000
    warmup_factor: float = 0.001
    poly_power: float = 0.9
    bn_momentum: float = 0.01
    checkpoint_every: int = 1000
    snapshot_every: int = 0  # keep the weights every N iterations for the mAP curve; 0 = off
    # Opt-in selection without the evaluation split (bestie.selection): this fraction of the
    # train images with ground truth is left out of training; the snapshot with the best
    # mAP50 on them becomes model.pt. 0 = off (the final weights, nothing selected).
    holdout: float = 0.0
    log_every: int = 20
    workers: int = 4
    amp: bool = True


@dataclass(frozen=True)
class RefineConfig:
    """Online self-refinement (SPEC §4)."""

    enabled: bool = True
    start_iter: int = 0
    threshold: float = 0.3
    nms_kernel: int = 41
    cluster: bool = True
    cluster_magnitude: float = 2.5
    cluster_area: int = 21
    cluster_tolerance: int = 3
    cluster_min_center: float = 0.05
    cluster_min_distance: float = 100.0
    max_instances: int = 5
    min_area: int = 50


@dataclass(frozen=True)
class LossConfig:
    """Losses and their combination (SPEC §4.4, §5.1)."""

    combine: Literal["mean", "sum"] = "mean"  # sum = the paper's eqs. 3/4
    center_weight: float = 200.0
    offset_weight: float = 0.01
    seg_weight: float = 1.0
    top_k_percent: float = 0.2


@dataclass(frozen=True)
class DecodeConfig:
    """Inference decoding (SPEC §6.5)."""

    threshold: float = 0.1
    nms_kernel: int = 41
    cluster: bool = True
    min_area: int = 50
    flip: bool = False
    flip_offsets: bool = False
    ignore_no_center: bool = False


@dataclass(frozen=True)
class MaskRcnnConfig:
    """Mask R-CNN refinement on the instance network's train predictions (paper §4.3).

    torchvision's maskrcnn_resnet50_fpn recipe (references/detection): SGD, linear warm-up,
    step decay, horizontal flips. ``source: gt`` trains the same model on the ground-truth
    masks: the fully supervised upper bound, the only training path that reads ground truth.
    """

    enabled: bool = True
    source: Literal["pseudo", "gt"] = "pseudo"  # gt: the fully supervised upper bound (oracle)
    backbone: Literal["resnet50", "resnet18", "resnet34"] = "resnet50"  # resnet18: CPU runs
    weights: str = ""  # full Mask R-CNN state dict (COCO), optional
    backbone_weights: str = ""  # ImageNet resnet50 state dict, optional
    trainable_layers: int = 3  # ResNet stages trained when starting from weights (0..5)
    pseudo_score_threshold: float = 0.3
    empty_policy: Literal["skip", "negative"] = "skip"
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    roi_batch_size: int = 512  # sampled RoIs per image for the box and mask heads
    fpn_channels: int = 256  # FPN/RPN/mask-head width (box head: 4x); 64 for CPU runs
    iterations: int = 20000
    batch_size: int = 8
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 1000
    warmup_factor: float = 0.001
    lr_steps: list[int] = field(default_factory=lambda: [14000, 18000])
    lr_gamma: float = 0.1
    clip_grad_norm: float = 0.0  # clip the gradient norm to this; 0 = off (the recipe)
    min_size: int = 800
    max_size: int = 1333
    flip: bool = True  # random horizontal flips
    checkpoint_every: int = 1000
    log_every: int = 20
    workers: int = 4
    amp: bool = True


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation thresholds."""

    iou_thresholds: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.7, 0.75])


@dataclass(frozen=True)
class ReportConfig:
    """What the report draws."""

    qualitative_images: int = 4
