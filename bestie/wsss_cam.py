"""The ``cam`` WSSS method: label maps from the CAM classifier, optionally retrained.

Raw CAM masks (the paper's Table 3 "CAM" row and the targets of the retrained net):

1. the CAM classifier (``classifier/cam/model.pt``, no PAM layers) runs on the image at
   each of ``wsss.scales`` (original size × scale, aspect ratio kept) and, with
   ``wsss.flip``, on its mirror;
2. each view's class maps of the image-label classes go through the cue extraction's CAM
   function (``bestie.cues.normalize_cams``: ReLU, bilinear to the image size, divided by
   the map's max + 1e-5) and flipped views are flipped back;
3. the views are averaged and each class map is divided by its max + 1e-5 again, so that
   ``wsss.background_threshold`` is a fraction of the class's strongest response whatever
   the number of views (IRN sums its scales and normalises once; same idea);
4. a pixel is background (0) where every label-class score is below the threshold, else
   the argmax class + 1; ties go to the lower class id. Classes outside the image-level
   label never appear;
5. with ``wsss.grabcut_iterations`` > 0, each class's mask is refined by OpenCV's GrabCut
   (:func:`grabcut_refine`): the mask is "probably foreground", the rest "probably
   background", and the colour models of the two move the boundary onto the image's edges.
   It plays the part of the dense CRF that CAM-based WSSS methods (PSA, IRN) apply.

Retrained maps (``wsss.retrain``): the segmentation net trained on the raw masks
(``bestie.engine.segnet_trainer``) predicts each image at ``wsss.predict_scales`` (+ flip);
the softmax probabilities are averaged at the image size and the argmax is taken over
background and the image-label classes only (the others' scores are dropped before the
argmax, rather than an absent-class winner being reset to background afterwards: a pixel the
net gives to a wrong class is more likely foreground of a present one than background).

No ground truth is read here: the threshold and scales are config values.

Reference: the CAM of clovaai/BESTIE PAM/models/classifier.py ``cam_normalize`` (via
``bestie.cues``); the multi-scale/flip inference of IRN (jiwoon-ahn/irn ``make_cam.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from bestie.cues import EPSILON, merge_flip, normalize_cams
from bestie.data.io import read_image
from bestie.data.transforms import normalize_image
from bestie.structures import IGNORE_LABEL, ImageRecord

__all__ = [
    "cam_label_map",
    "cam_map_source",
    "grabcut_refine",
    "load_segnet",
    "mark_boundaries",
    "multiscale_cams",
    "segnet_label_map",
    "segnet_probabilities",
]

MapSource = Callable[[ImageRecord], np.ndarray]


def cam_label_map(
    scores: np.ndarray | torch.Tensor, classes: Sequence[int], threshold: float
) -> np.ndarray:
    """The label map of class scores: background below ``threshold``, else argmax class + 1.

    Args:
        scores: float [K, H, W], the score maps of the image-label classes ``classes``.
        classes: [K] their 0-based class ids, ascending (ties go to the first).
        threshold: a pixel is background (0) where every score is < threshold.

    Returns:
        uint8 [H, W]: 0 background, c + 1 for class c.

    Raises:
        ValueError: the number of maps differs from the number of classes.
    """
    scores = torch.as_tensor(scores).float().cpu()
    if scores.ndim != 3 or scores.shape[0] != len(classes):
        raise ValueError(
            f"expected [{len(classes)}, H, W] score maps for classes {list(classes)}, "
            f"got {tuple(scores.shape)}"
        )
    if scores.shape[0] == 0:
        return np.zeros(tuple(scores.shape[1:]), np.uint8)
    best, index = scores.max(dim=0)  # the first maximum on ties
    ids = torch.as_tensor([c + 1 for c in classes], dtype=torch.int64)[index]
    return torch.where(best >= threshold, ids, 0).numpy().astype(np.uint8)


def grabcut_refine(image: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray:
    """Snap each class's region of a label map to the image's colour boundaries (GrabCut).

    Args:
        image: uint8 RGB [H, W, 3].
        labels: uint8 [H, W] label map (0 background, c + 1 for class c).
        iterations: GrabCut iterations per class (0 returns ``labels`` unchanged).

    Returns:
        uint8 [H, W]: per class, the pixels GrabCut keeps as foreground when initialised with
        the class's region as "probably foreground" and the rest as "probably background". A
        pixel claimed by two classes keeps its original label; a class whose region is too
        small for GrabCut's colour models (< 2 pixels on either side) keeps its region.
    """
    if iterations <= 0:
        return labels
    bgr = np.ascontiguousarray(image[..., ::-1])
    refined = np.zeros_like(labels)
    for value in np.unique(labels):
        if value in (0, IGNORE_LABEL):
            continue
        region = labels == value
        keep = region
        if 2 <= region.sum() <= region.size - 2:
            mask = np.where(region, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
            models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.grabCut(bgr, mask, None, *models, iterations, cv2.GC_INIT_WITH_MASK)
            keep = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        claimed = keep & ((refined == 0) | region)
        refined[claimed] = value
    return refined


def _views(image: np.ndarray, scale: float, flip: bool, device: torch.device) -> torch.Tensor:
    """[1 or 2, 3, h, w]: the image resized by ``scale`` (and its mirror), normalised."""
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    tensor = torch.from_numpy(normalize_image(image))[None].to(device)
    return torch.cat([tensor, tensor.flip(-1)]) if flip else tensor


@torch.no_grad()
def multiscale_cams(
    model: nn.Module,
    image: np.ndarray,
    classes: Sequence[int],
    scales: Sequence[float],
    *,
    flip: bool = True,
) -> torch.Tensor:
    """Normalised CAMs of the image-label classes, averaged over scales and flips.

    Args:
        model: the CAM classifier in eval mode, returning ``(logits, class_maps [B, C, h, w])``.
        image: uint8 RGB [H, W, 3].
        classes: [K] the image-label class ids.
        scales: input scales (original size × scale).
        flip: also run the mirrored image.

    Returns:
        float32 [K, H, W] in [0, 1) on the model's device (K = 0: an empty tensor).
    """
    if not scales:
        raise ValueError("wsss.scales must name at least one scale")
    device = next(model.parameters()).device
    height, width = image.shape[:2]
    index = torch.as_tensor(list(classes), dtype=torch.long, device=device)
    total = torch.zeros((len(classes), height, width), device=device)
    if not len(classes):
        return total
    for scale in scales:
        _, class_maps = model(_views(image, scale, flip, device))
        if max(classes) >= class_maps.shape[1]:
            raise ValueError(
                f"image-label classes {list(classes)} exceed the classifier's "
                f"{class_maps.shape[1]} classes"
            )
        cams = normalize_cams(class_maps[:, index], None, (height, width))
        total += (merge_flip(cams[:1], cams[1:]) if flip else cams)[0]
    total /= len(scales)
    return total / (total.amax(dim=(1, 2), keepdim=True) + EPSILON)


@torch.no_grad()
def segnet_probabilities(
    model: nn.Module, image: np.ndarray, scales: Sequence[float], *, flip: bool = True
) -> torch.Tensor:
    """Softmax of the segmentation net, averaged over scales and flips at the image size.

    Args:
        model: returns logits [B, C+1, h, w] at its input size (``build_semantic_net``).
        image: uint8 RGB [H, W, 3].

    Returns:
        float32 [C+1, H, W] on the model's device.
    """
    if not scales:
        raise ValueError("wsss.predict_scales must name at least one scale")
    device = next(model.parameters()).device
    size = image.shape[:2]
    total = None
    for scale in scales:
        logits = model(_views(image, scale, flip, device)).float()
        logits = nn.functional.interpolate(logits, size, mode="bilinear", align_corners=False)
        probabilities = logits.softmax(dim=1)
        if flip:
            probabilities = merge_flip(probabilities[:1], probabilities[1:])
        total = probabilities[0] if total is None else total + probabilities[0]
    return total / len(scales)


def segnet_label_map(probabilities: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
    """Argmax over background and the image-label classes only.

    Args:
        probabilities: float [C+1, H, W] (channel 0 background, c + 1 class c).
        classes: the image-label class ids.

    Returns:
        uint8 [H, W]: 0 background, c + 1 for class c (ties go to the lower channel).
    """
    channels = torch.as_tensor([0, *(c + 1 for c in classes)], dtype=torch.long)
    if int(channels.max()) >= probabilities.shape[0]:
        raise ValueError(
            f"image-label classes {list(classes)} exceed the net's "
            f"{probabilities.shape[0] - 1} classes"
        )
    kept = probabilities[channels.to(probabilities.device)].argmax(dim=0).cpu()
    return channels[kept].numpy().astype(np.uint8)


def mark_boundaries(semantic: np.ndarray, width: int) -> np.ndarray:
    """A copy of a label map with the pixels near a label change set to 255 (ignore).

    A pixel is marked when some pixel within Chebyshev distance ``width`` has another label,
    i.e. a band of about 2·width pixels straddles each boundary. CAMs come from stride-8
    maps upsampled bilinearly, so their mask boundaries are uncertain by a few pixels; the
    retrained net is then not taught where exactly they run (it takes the image's edges).

    Args:
        semantic: uint8 [H, W] label map.
        width: band half-width in pixels; 0 returns an unchanged copy.
    """
    if width < 0:
        raise ValueError(f"wsss.ignore_border must be >= 0, got {width}")
    semantic = np.array(semantic, np.uint8)
    if width == 0:
        return semantic
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    near = cv2.dilate(semantic, kernel) != cv2.erode(semantic, kernel)
    semantic[near] = IGNORE_LABEL
    return semantic


def load_segnet(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """A retrained segmentation net from ``wsss/segnet/model.pt``, on CPU, in eval mode.

    Returns:
        ``(model, metadata)``; metadata holds backbone, num_classes_with_bg, categories,
        crop and iterations.
    """
    from bestie.engine.checkpoint import load_model
    from bestie.models.semantic_net import build_semantic_net

    state, metadata = load_model(path)
    try:
        model = build_semantic_net(metadata["backbone"], int(metadata["num_classes_with_bg"]))
    except KeyError as error:
        raise ValueError(f"{path}: segmentation model metadata lacks {error}") from error
    model.load_state_dict(state)
    return model.eval(), metadata


def _read(record: ImageRecord) -> np.ndarray:
    image = read_image(record.file)
    if image.shape[:2] != (record.height, record.width):
        raise ValueError(
            f"image {record.name} (id {record.id}): file {record.file} is "
            f"{image.shape[0]}x{image.shape[1]}, the records say {record.height}x{record.width}"
        )
    return image


def cam_map_source(cfg, args: argparse.Namespace) -> MapSource:
    """record -> uint8 label map under ``wsss.method: cam``.

    Args:
        cfg: a config with the ``wsss`` section.
        args: ``.classifier`` (CAM classifier model.pt) and ``.segnet`` (retrained net,
            "" when ``wsss.retrain`` is false).

    Returns:
        the retrained net's maps when ``wsss.retrain`` is true and ``args.segnet`` is given,
        else the raw CAM masks.
    """
    wsss = cfg.wsss
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    segnet = getattr(args, "segnet", "") or ""
    if wsss.retrain and segnet:
        model, _ = load_segnet(segnet)
        model.to(device)

        def retrained(record: ImageRecord) -> np.ndarray:
            probabilities = segnet_probabilities(
                model, _read(record), wsss.predict_scales, flip=wsss.flip
            )
            return segnet_label_map(probabilities, record.classes)

        return retrained
    classifier = getattr(args, "classifier", "") or ""
    if not classifier:
        raise ValueError("wsss.method cam: no CAM classifier given (--classifier)")
    from bestie.models.classifier import load_classifier

    model, _ = load_classifier(classifier)
    model.to(device)

    def raw(record: ImageRecord) -> np.ndarray:
        image = _read(record)
        cams = multiscale_cams(model, image, record.classes, wsss.scales, flip=wsss.flip)
        labels = cam_label_map(cams, record.classes, wsss.background_threshold)
        return grabcut_refine(image, labels, wsss.grabcut_iterations)

    return raw
