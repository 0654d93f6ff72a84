"""Speed of online refinement and decoding on synthetic VOC-sized scenes (SPEC §11).

Prints one JSON object (``common.py`` shape): median milliseconds per image (and the range
over runs) for ``refine_targets`` (B = 1 and B = 4 at 416 x 416), ``decode`` at 375 x 500
(no flip) and ``find_centers`` on a full 375 x 500 map, with torch limited to 2 threads as
in SPEC §11. Targets: refine_targets < 40 ms/image, decode < 80 ms/image (on process CPU
time on the CPU, on wall time with ``--device cuda``).

Scenes: 3-8 elliptical instances of 1-3 classes out of 20, about a third of them placed
touching an earlier instance of the same class (3.1 WSSS components of 50+ px per image).
Outputs are noisy but realistic: seg logits
N(0, 1) + 3 on the true class, sigma-6 centre Gaussians with amplitude U(0, 1) at the
instance centres (+ N(0, 0.02) noise), offsets to the instance centre + N(0, 0.7) noise.

Usage: python benchmarks/bench_refine_decode.py [--runs 5] [--scenes 8] [--device cpu]
    [--threads 2]

On a shared machine, OpenMP threads busy-wait for descheduled peers and inflate both wall
and CPU time; run with OMP_WAIT_POLICY=PASSIVE there and read ``median_cpu_ms_per_image``
(the process's CPU time, all threads), which bounds the wall time on two idle cores.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from common import check, emit, result, summary, timed

from bestie.components import label_components
from bestie.postprocess import decode, find_centers
from bestie.refine import refine_targets
from bestie.sections import DecodeConfig, RefineConfig

NUM_CLASSES = 20


def make_scene(rng: np.random.Generator, height: int, width: int) -> dict[str, torch.Tensor]:
    """One synthetic scene: WSSS map, image label and network-like outputs."""
    classes = rng.choice(NUM_CLASSES, size=int(rng.integers(1, 4)), replace=False)
    semantic = np.zeros((height, width), np.uint8)
    instance = np.zeros((height, width), np.int32)
    centers: list[tuple[int, int, int]] = []
    scale = min(height, width)
    for index in range(int(rng.integers(3, 9))):
        class_id = int(rng.choice(classes))
        if centers and rng.random() < 0.35:  # touch an earlier instance
            near_y, near_x, class_id = centers[int(rng.integers(len(centers)))]
            center_y = int(np.clip(near_y + rng.integers(-scale // 7, scale // 7), 0, height - 1))
            center_x = int(np.clip(near_x + rng.integers(-scale // 7, scale // 7), 0, width - 1))
        else:
            center_y, center_x = int(rng.integers(height)), int(rng.integers(width))
        axes = (
            int(rng.integers(scale // 25, scale // 6)),
            int(rng.integers(scale // 25, scale // 6)),
        )
        blob = np.zeros((height, width), np.uint8)
        cv2.ellipse(blob, (center_x, center_y), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        semantic[blob > 0] = class_id + 1
        instance[blob > 0] = index + 1
        centers.append((center_y, center_x, class_id))
    return _outputs(rng, semantic, instance, centers, classes)


def _outputs(rng, semantic, instance, centers, classes) -> dict[str, torch.Tensor]:
    """Network-like outputs for a scene (see the module docstring)."""
    height, width = semantic.shape
    normal = rng.standard_normal
    seg = normal((NUM_CLASSES + 1, height, width)).astype(np.float32)
    true_class = semantic[None].astype(np.int64)
    np.put_along_axis(seg, true_class, np.take_along_axis(seg, true_class, 0) + 3.0, axis=0)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    center = 0.02 * normal((NUM_CLASSES, height, width)).astype(np.float32)
    offset = 0.7 * normal((2, height, width)).astype(np.float32)
    for index, (center_y, center_x, class_id) in enumerate(centers):
        amplitude = rng.uniform(0, 1)
        gaussian = amplitude * np.exp(-((rows - center_y) ** 2 + (cols - center_x) ** 2) / 72.0)
        center[class_id] = np.maximum(center[class_id], gaussian)
        mask = instance == index + 1
        offset[0][mask] += center_y - rows[mask]
        offset[1][mask] += center_x - cols[mask]
    label = np.zeros(NUM_CLASSES, np.float32)
    label[classes] = 1
    return {
        "seg": torch.from_numpy(seg),
        "center": torch.from_numpy(center),
        "offset": torch.from_numpy(offset),
        "label": torch.from_numpy(label),
        "semantic": torch.from_numpy(semantic),
    }


def _summary(seconds: list[tuple[float, float]], images: int) -> dict[str, float]:
    """``common.summary`` under this script's historical key names."""
    figures = summary(seconds, per=images, digits=2)
    return {
        "median_ms_per_image": figures["median_ms"],
        "min_ms_per_image": figures["min_ms"],
        "max_ms_per_image": figures["max_ms"],
        # CPU time of the process (all threads): robust to other load on a shared machine.
        "median_cpu_ms_per_image": figures["median_cpu_ms"],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(function, runs: int) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of each run, after one warm-up run."""
    return timed(function, runs)


def bench_refine(scenes, batch_size, runs, device) -> dict[str, float]:
    """``refine_targets`` timing over the scenes in batches of ``batch_size``."""
    batches = [
        {
            key: torch.stack([s[key] for s in scenes[i : i + batch_size]]).to(device)
            for key in scenes[0]
        }
        for i in range(0, len(scenes) - batch_size + 1, batch_size)
    ]
    cfg = RefineConfig()

    def run() -> None:
        for batch in batches:
            refine_targets(
                batch["seg"],
                batch["center"],
                batch["offset"],
                batch["label"],
                batch["semantic"],
                cfg,
            )
        _sync(device)

    return _summary(_time(run, runs), batch_size * len(batches))


def bench_decode(scenes, runs, device) -> tuple[dict[str, float], float]:
    """Decode timing and the mean number of decoded instances per image."""
    cfg = DecodeConfig()
    inputs = [
        (torch.softmax(s["seg"], 0).to(device), s["center"].to(device), s["offset"].to(device))
        for s in scenes
    ]

    def run() -> None:
        for prob, center, offset in inputs:
            decode(prob, center, offset, cfg)
        _sync(device)

    instances = sum(len(decode(*arguments, cfg)) for arguments in inputs) / len(inputs)
    return _summary(_time(run, runs), len(inputs)), round(instances, 2)


def bench_find_centers(scene, runs, device, calls: int = 10) -> dict[str, float]:
    """One full-image NMS on the max over classes of a scene's centre maps."""
    heatmap = scene["center"].to(device).amax(dim=0)

    def run() -> None:
        for _ in range(calls):
            find_centers(heatmap, 0.1, 41)
        _sync(device)

    return _summary(_time(run, runs), calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    train = [make_scene(rng, 416, 416) for _ in range(args.scenes)]
    val = [make_scene(rng, 375, 500) for _ in range(args.scenes)]
    components = sum(
        len(label_components(s["semantic"].numpy() == value, min_area=50)[1])
        for s in train
        for value in np.unique(s["semantic"].numpy())
        if value
    )
    decoded, instances = bench_decode(val, args.runs, device)
    inputs = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "scenes": args.scenes,
        "runs": args.runs,
        "refine_input": "seg [B,21,416,416], center [B,20,416,416], offset [B,2,416,416]",
        "refine_components_per_image": round(components / len(train), 2),
        "decode_input": "prob [21,375,500], center [20,375,500], offset [2,375,500], no flip",
        "decode_instances_per_image": instances,
        "find_centers_input": "heatmap [375,500], threshold 0.1, kernel 41",
    }
    figures = {
        "refine_targets_B1": bench_refine(train, 1, args.runs, device),
        "refine_targets_B4": bench_refine(train, 4, args.runs, device),
        "decode": decoded,
        "find_centers": bench_find_centers(val[0], args.runs, device),
    }
    emit(result("refine_decode", inputs, figures, targets=_targets(figures, device)))


def _targets(figures: dict, device: torch.device) -> list[dict]:
    """refine_targets < 40 ms/image (B = 1 and 4), decode < 80 ms/image."""
    cuda = device.type == "cuda"
    key = "median_ms_per_image" if cuda else "median_cpu_ms_per_image"
    basis = "median wall time (CUDA synchronised)" if cuda else "median process CPU time"
    limits = {"refine_targets_B1": 40.0, "refine_targets_B4": 40.0, "decode": 80.0}
    return [
        check(f"{name}.{key}", figures[name][key], limit, basis=basis)
        for name, limit in limits.items()
    ]


if __name__ == "__main__":
    main()
