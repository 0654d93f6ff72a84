"""Training losses of the instance network (SPEC §4.4, §5.1).

- Centre: weighted MSE summed over all C channels; offset: weighted L1 summed over (dy, dx).
  Both divide by the number of pixels with weight > 0, pooled over the batch (a soft weight
  counts 1), and are 0 when no pixel has weight — the official normalisation, not the paper's.
- Semantic: DeepLab hard-pixel cross-entropy, the mean of the top 20 % of all B·H·W pixel
  losses, with ignored pixels (255) kept in the pool as zeros.
- :func:`instance_losses` combines the pseudo-label terms (c1, o1) and the refined-label terms
  (c2, o2) as ``mean`` (the code) or ``sum`` (the paper's eqs. 3/4).

Every reduction runs in float32 (inputs are cast, so the losses are safe under AMP) and
without host-device synchronisation: no ``.item()``, no Python branch on tensor values.

Reference: clovaai/BESTIE@f27eb69 utils/loss.py (Weighted_MSELoss, Weighted_L1_Loss,
DeepLabCE) and main.py (loss combination).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from bestie.sections import LossConfig

__all__ = ["deeplab_ce", "instance_losses", "weighted_l1", "weighted_mse"]


def _pixel_weight(weight: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Weight [B,H,W] or [B,1,H,W] -> float32 [B,1,H,W], checked against pred [B,K,H,W]."""
    if weight.dim() == 3:
        weight = weight.unsqueeze(1)
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(f"weight must be [B,H,W] or [B,1,H,W], got {tuple(weight.shape)}")
    if (weight.shape[0], *weight.shape[2:]) != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(
            f"weight {tuple(weight.shape)} does not match prediction {tuple(pred.shape)}"
        )
    return weight.float()


def _weighted_sum(per_element: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ w·loss over everything / #{(b, y, x): w > 0}; 0 when no pixel has weight."""
    positive = weight > 0
    # torch.where keeps a non-finite prediction on a zero-weight pixel out of the sum.
    total = torch.where(positive, per_element * weight, per_element.new_zeros(())).sum()
    return total / positive.sum().clamp_min(1).float()


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Centre loss: Σ_{b,c,y,x} w[b,y,x]·(p − t)² / #{(b,y,x) : w > 0} (SPEC §5.1).

    Args:
        pred: [B,C,H,W] predicted centre heatmaps (any float dtype).
        target: [B,C,H,W] target heatmaps.
        weight: [B,H,W] or [B,1,H,W] non-negative pixel weights (soft weights count 1 in the
            normaliser).

    Returns:
        0-dim float32 tensor; 0 when every weight is 0.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    w = _pixel_weight(weight, pred)
    return _weighted_sum((pred.float() - target.float()).square(), w)


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Offset loss: Σ_{b,k,y,x} w[b,y,x]·|p − t| / #{(b,y,x) : w > 0} (SPEC §5.1).

    Args:
        pred: [B,2,H,W] predicted (dy, dx) offsets.
        target: [B,2,H,W] target offsets.
        weight: [B,H,W] or [B,1,H,W] non-negative pixel weights.

    Returns:
        0-dim float32 tensor; 0 when every weight is 0.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    w = _pixel_weight(weight, pred)
    return _weighted_sum((pred.float() - target.float()).abs(), w)


def deeplab_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = 255,
    top_k_percent: float = 0.2,
) -> torch.Tensor:
    """DeepLab hard-pixel cross-entropy (SPEC §5.1).

    Per-pixel cross-entropy (ignored pixels give 0), flattened over the batch; the mean of the
    largest ``top_k_percent`` of all B·H·W values, ignored pixels included in the pool as zeros.
    At least one pixel is kept, so tiny inputs never average an empty set.

    Args:
        logits: [B,K,H,W] class logits (any float dtype).
        target: [B,H,W] integer labels in [0, K) or ``ignore_index``.
        ignore_index: label that contributes 0.
        top_k_percent: fraction in (0, 1]; 1 gives the plain mean over all B·H·W pixels.

    Returns:
        0-dim float32 tensor.
    """
    if not 0.0 < top_k_percent <= 1.0:
        raise ValueError(f"top_k_percent must be in (0, 1], got {top_k_percent}")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}"
        )
    pixel_losses = F.cross_entropy(
        logits.float(), target.long(), ignore_index=ignore_index, reduction="none"
    ).flatten()
    if top_k_percent == 1.0:
        return pixel_losses.mean()
    count = max(1, int(top_k_percent * pixel_losses.numel()))
    return torch.topk(pixel_losses, count, sorted=False).values.mean()


def _label_weight(labels: Mapping[str, torch.Tensor], iag: bool) -> torch.Tensor:
    """The label set's pixel weight, or weight 1 everywhere without instance-aware guidance."""
    if iag:
        return labels["weight"]
    return torch.ones_like(labels["weight"], dtype=torch.float32)


def instance_losses(
    outputs: Mapping[str, torch.Tensor],
    pseudo: Mapping[str, torch.Tensor],
    refined: Mapping[str, torch.Tensor] | None,
    semantic_target: torch.Tensor,
    cfg: LossConfig,
    *,
    iag: bool = True,
    point_supervision: bool = False,
) -> dict[str, torch.Tensor]:
    """All instance-network losses and their combination (SPEC §4.4, §5.1).

    With c1/o1 the centre/offset losses on the pseudo labels and c2/o2 those on the refined
    labels, cw = ``cfg.center_weight``, ow = ``cfg.offset_weight``:

    - ``combine="mean"`` (the official code): seg + 0.5·(c1 + c2)·cw + 0.5·(o1 + o2)·ow;
    - ``combine="sum"`` (the paper's eqs. 3/4): seg + (c1 + c2)·cw + (o1 + o2)·ow;
    - point supervision: c2 := c1 (the refined centre target would be the same ground-truth
      centre map), in either mode: ``mean`` gives c1·cw (the code), ``sum`` gives 2·c1·cw
      (the paper's two centre terms, both against the ground-truth map);
    - no refinement (``refined is None``): there is no refined term, so the total is
      seg + c1·cw + o1·ow in either mode (``mean`` with c2 = c1, o2 = o1 is the code's rule).

    An all-zero refined weight gives c2 = o2 = 0 (so, under ``mean``, the pseudo terms get half
    weight, as in the official code). seg = ``cfg.seg_weight`` · DeepLab CE.

    Args:
        outputs: network outputs: seg [B,C+1,H,W], center [B,C,H,W], offset [B,2,H,W].
        pseudo: pseudo labels: center [B,C,H,W], offset [B,2,H,W], weight [B,H,W] or [B,1,H,W].
        refined: refined labels of the same shapes, or None when refinement is off (or has
            not started yet); with point supervision only its offset and weight are read.
        semantic_target: [B,H,W] integer WSSS map (0 background, c+1, 255 ignore).
        cfg: loss weights, combination mode and top-k fraction.
        iag: instance-aware guidance; False puts weight 1 on every pixel of both label sets.
        point_supervision: the centre targets are ground-truth points (c2 := c1).

    Returns:
        dict of 0-dim float32 tensors: ``total`` (weighted), and the unweighted terms ``seg``
        (plain CE), ``center_pseudo`` (c1), ``offset_pseudo`` (o1), ``center_refined`` (c2)
        and ``offset_refined`` (o2) as they enter the combination.
    """
    if cfg.combine not in ("mean", "sum"):
        raise ValueError(f"loss.combine must be 'mean' or 'sum', got {cfg.combine!r}")
    seg = deeplab_ce(outputs["seg"], semantic_target, top_k_percent=cfg.top_k_percent)
    pseudo_weight = _label_weight(pseudo, iag)
    center_pseudo = weighted_mse(outputs["center"], pseudo["center"], pseudo_weight)
    offset_pseudo = weighted_l1(outputs["offset"], pseudo["offset"], pseudo_weight)
    if refined is None:
        center_refined, offset_refined = center_pseudo, offset_pseudo
        center_sum, offset_sum = center_pseudo, offset_pseudo
    else:
        refined_weight = _label_weight(refined, iag)
        offset_refined = weighted_l1(outputs["offset"], refined["offset"], refined_weight)
        if point_supervision:  # refined labels carry no centre map (SPEC §4.3)
            center_refined = center_pseudo
        else:
            center_refined = weighted_mse(outputs["center"], refined["center"], refined_weight)
        scale = 0.5 if cfg.combine == "mean" else 1.0
        center_sum = scale * (center_pseudo + center_refined)
        offset_sum = scale * (offset_pseudo + offset_refined)
    total = cfg.seg_weight * seg + cfg.center_weight * center_sum + cfg.offset_weight * offset_sum
    return {
        "total": total,
        "seg": seg,
        "center_pseudo": center_pseudo,
        "offset_pseudo": offset_pseudo,
        "center_refined": center_refined,
        "offset_refined": offset_refined,
    }
