"""Hand-built network outputs shared by the decoding and refinement tests."""

from __future__ import annotations

import torch


def perfect_offsets(height: int, width: int, center: tuple[int, int]) -> torch.Tensor:
    """[2, H, W] offsets pointing every pixel exactly at ``center`` (y, x)."""
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack((center[0] - rows, center[1] - cols))
