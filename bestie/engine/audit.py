"""True positives among pseudo and refined labels during training (the paper's Fig. 6).

On a fixed set of train images that have ground truth, at their original size: the pseudo
instances are scored once; the refined labels are recomputed from the current network at
every log step (eval mode) and scored the same way. A label is a true positive when its
mask has IoU >= 0.5 with a ground-truth instance of its class. Ground truth is read for
this statistic only; it never reaches the losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bestie.evaluation.iou import count_true_positives
from bestie.inference import network_outputs
from bestie.refine import refine_targets
from bestie.sections import RefineConfig
from bestie.structures import Instances


def instances_from_targets(
    offset: np.ndarray, weight: np.ndarray, semantic: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Recover instance masks from target maps: weighted pixels sharing a target centre.

    Args:
        offset: float [2, H, W] target (dy, dx).
        weight: float [H, W]; pixels with weight > 0 carry a label.
        semantic: uint8 [H, W] WSSS map giving each instance's class (c+1).

    Returns:
        (masks bool [K, H, W], labels int64 [K]).
    """
    ys, xs = np.nonzero(weight > 0)
    if ys.size == 0:
        return np.zeros((0, *weight.shape), bool), np.zeros((0,), np.int64)
    centres = np.stack(
        [
            np.rint(ys + offset[0, ys, xs]),
            np.rint(xs + offset[1, ys, xs]),
            semantic[ys, xs].astype(np.float64),
        ],
        axis=1,
    )
    keys, group = np.unique(centres, axis=0, return_inverse=True)
    masks = np.zeros((len(keys), *weight.shape), bool)
    masks[group.reshape(-1), ys, xs] = True
    return masks, keys[:, 2].astype(np.int64) - 1


@dataclass
class AuditImage:
    image: np.ndarray
    semantic: np.ndarray
    label: np.ndarray
    gt: Instances


class TruePositiveAudit:
    """Callable (model, iteration) -> {"pseudo_tp", "refined_tp"} over fixed audit images.

    Args:
        images: the audit images (image, WSSS map, multi-hot label, GT instances).
        pseudo_true_positives: true positives among their pseudo instances (fixed).
        refine: the refinement parameters of training.
        sigma: centre Gaussian sigma.
        device: where the network runs.
    """

    def __init__(
        self,
        images: list[AuditImage],
        pseudo_true_positives: int,
        refine: RefineConfig,
        sigma: float,
        device: torch.device,
    ) -> None:
        self.images, self.pseudo_tp = images, pseudo_true_positives
        self.refine, self.sigma, self.device = refine, sigma, device

    @torch.no_grad()
    def __call__(self, model: nn.Module, iteration: int) -> dict[str, float]:
        model.eval()
        refined_tp = 0
        for item in self.images:
            outputs = network_outputs(
                model, item.image, self.device, flip=False, flip_offsets=False
            )
            semantic = torch.from_numpy(item.semantic.astype(np.int64)).to(self.device)
            refined = refine_targets(
                outputs["seg"].clamp_min(1e-8).log()[None],
                outputs["center"][None],
                outputs["offset"][None],
                torch.from_numpy(item.label)[None].to(self.device),
                semantic[None],
                self.refine,
                sigma=self.sigma,
            )
            masks, labels = instances_from_targets(
                refined["offset"][0].cpu().numpy(),
                refined["weight"][0].cpu().numpy(),
                item.semantic,
            )
            refined_tp += count_true_positives(masks, labels, item.gt.masks, item.gt.labels)
        return {"pseudo_tp": float(self.pseudo_tp), "refined_tp": float(refined_tp)}
