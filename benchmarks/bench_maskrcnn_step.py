"""Mask R-CNN refinement: the cost of one training step per FPN width (``maskrcnn.fpn_channels``).

Times forward, the five losses, backward and an SGD step of ``build_maskrcnn`` (ResNet-18
FPN by default, random init, trainable BatchNorm as on the synthetic default) on a fixed
batch of synthetic 128² images with three rectangular instances each, 32 sampled RoIs per
image: the CPU default's setting. torchvision's 256-channel FPN and heads against the
narrower ones; on CPU the RoI heads (RoIAlign's backward above all) dominate at 256.

Usage: python benchmarks/bench_maskrcnn_step.py [--channels 256 64] [--backbone resnet18]
    [--batch 4] [--size 128] [--steps 5] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
from common import emit, result, summary, timed

from bestie.models.maskrcnn import build_maskrcnn


def batch(size: int, images: int, classes: int) -> tuple[list[torch.Tensor], list[dict]]:
    """Random images, each with three boxes (and their filled masks) of cycling classes."""
    generator = torch.Generator().manual_seed(0)
    inputs, targets = [], []
    for image in range(images):
        inputs.append(torch.rand((3, size, size), generator=generator))
        boxes, masks = [], torch.zeros((3, size, size), dtype=torch.uint8)
        for index in range(3):
            side = size // 4 + 4 * index
            top, left = (int(v) for v in torch.randint(0, size - side, (2,), generator=generator))
            boxes.append([left, top, left + side, top + side])
            masks[index, top : top + side, left : left + side] = 1
        labels = torch.tensor([(image + index) % classes + 1 for index in range(3)])
        targets.append(
            {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": labels, "masks": masks}
        )
    return inputs, targets


def time_step(channels: int, args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds per training step (wall and process CPU) of one FPN width."""
    torch.manual_seed(0)
    model = build_maskrcnn(
        3,
        backbone=args.backbone,
        min_size=args.size,
        max_size=args.size,
        anchor_sizes=[16, 32, 64, 128, 256],
        roi_batch_size=32,
        fpn_channels=channels,
    ).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    images, targets = batch(args.size, args.batch, 3)

    def step() -> None:
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    figures = summary(timed(step, args.steps, warmup=2))
    figures["parameters_millions"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures = {f"fpn_{channels}": time_step(channels, args) for channels in args.channels}
    inputs = {
        "backbone": args.backbone,
        "batch": args.batch,
        "size": args.size,
        "roi_batch_size": 32,
        "instances_per_image": 3,
        "steps": args.steps,
        "threads": args.threads,
        "device": "cpu",
    }
    emit(result("maskrcnn_step", inputs, figures, notes="milliseconds per training step"))


if __name__ == "__main__":
    main()
