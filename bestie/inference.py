"""Instance-network inference on one image (SPEC §6), shared by prediction and audits.

The image is resized to a multiple of 32 and normalised; the outputs are interpolated to
the original size and the offsets rescaled from resized-input pixels to original pixels
(the official code leaves them unscaled, SPEC §6.3: a bug we fix). Optional flip
test-time augmentation averages the semantic probabilities and centre maps, and the
offsets too when ``decode.flip_offsets`` is set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bestie.data.transforms import EvalTransform
from bestie.postprocess import decode
from bestie.sections import DecodeConfig
from bestie.structures import Instances


@torch.no_grad()
def network_outputs(
    model: nn.Module, image: np.ndarray, device: torch.device, *, flip: bool, flip_offsets: bool
) -> dict[str, torch.Tensor]:
    """Semantic probabilities [C+1,H,W], centres [C,H,W], offsets [2,H,W] at image size.

    Args:
        model: the instance network in eval mode.
        image: uint8 RGB [H, W, 3].
        device: where to run.
        flip: average with the horizontally flipped image's outputs.
        flip_offsets: also average the offsets (dx negated) of the flipped pass.
    """
    height, width = image.shape[:2]
    tensor = torch.from_numpy(EvalTransform()(image)).to(device)[None]
    batch = torch.cat([tensor, tensor.flip(-1)]) if flip else tensor
    outputs = model(batch, target_shape=(height, width))
    probability = outputs["seg"].float().softmax(dim=1)
    center = outputs["center"].float()
    offset = outputs["offset"].float()
    scale = torch.tensor([height / tensor.shape[-2], width / tensor.shape[-1]], device=device).view(
        1, 2, 1, 1
    )
    offset = offset * scale
    if flip:
        probability = (probability[0] + probability[1].flip(-1)) / 2
        center = (center[0] + center[1].flip(-1)) / 2
        if flip_offsets:
            mirrored = offset[1].flip(-1) * torch.tensor([1.0, -1.0], device=device).view(2, 1, 1)
            offset = (offset[0] + mirrored) / 2
        else:
            offset = offset[0]
        return {"seg": probability, "center": center, "offset": offset}
    return {"seg": probability[0], "center": center[0], "offset": offset[0]}


def predict_image(
    model: nn.Module, image: np.ndarray, device: torch.device, cfg: DecodeConfig
) -> Instances:
    """Decoded instances (masks, labels, scores) of one image; possibly none."""
    outputs = network_outputs(model, image, device, flip=cfg.flip, flip_offsets=cfg.flip_offsets)
    return decode(outputs["seg"], outputs["center"], outputs["offset"], cfg)
