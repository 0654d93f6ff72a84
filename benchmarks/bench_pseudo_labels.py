"""Speed of semantic knowledge transfer and target generation (SPEC §2.2-2.3, §11).

Synthetic VOC-sized scenes (375x500): 3-8 elliptical instances of 1-3 classes out of 20,
including touching same-class pairs (one component, two cues: rejected), one cue per
instance near its centre. Single thread. Prints one JSON object (``common.py`` shape) with
per-image milliseconds, wall and process CPU time (median over runs, each run a pass over
every scene); the official ``pseudo_label_generation`` takes about 5.1 ms (cls) and 5.7 ms
(point) per image (§11). Target: transfer + make_targets < 3 ms/image (CPU time).

Usage: python benchmarks/bench_pseudo_labels.py [--scenes 50] [--runs 7] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics

import cv2
import numpy as np
import torch
from common import check, emit, result, summary, timed

from bestie.data.targets import make_targets
from bestie.pseudo_labels import transfer, transfer_with_stats

HEIGHT, WIDTH, NUM_CLASSES = 375, 500, 20


def make_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One scene: (semantic uint8 [H, W], cues int64 [N, 3] (y, x, class), image classes)."""
    semantic = np.zeros((HEIGHT, WIDTH), np.uint8)
    classes = rng.choice(NUM_CLASSES, size=int(rng.integers(1, 4)), replace=False).tolist()
    cues = []
    count = int(rng.integers(3, 9))
    while len(cues) < count:
        class_id = int(rng.choice(classes))
        cy, cx = int(rng.integers(40, HEIGHT - 40)), int(rng.integers(40, WIDTH - 40))
        axes = (int(rng.integers(15, 60)), int(rng.integers(15, 60)))
        cv2.ellipse(semantic, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, class_id + 1, -1)
        cues.append((cy, cx, class_id))
        if rng.random() < 0.3 and len(cues) < count:
            # A touching twin of the same class to the right: one component, two cues.
            twin_x = min(cx + 2 * axes[0], WIDTH - 1)
            cv2.ellipse(semantic, (twin_x, cy), axes, 0.0, 0, 360, class_id + 1, -1)
            cues.append((cy, twin_x, class_id))
    return semantic, np.asarray(cues, np.int64), classes


def time_per_image(function, scenes, runs: int) -> dict[str, float]:
    """Per-scene milliseconds of passes over every scene (wall and CPU; median over runs)."""

    def one_pass() -> None:
        for scene in scenes:
            function(*scene)

    return summary(timed(one_pass, runs, warmup=0), per=len(scenes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    rng = np.random.default_rng(args.seed)
    scenes = [make_scene(rng) for _ in range(args.scenes)]
    with_instances = [(transfer(*scene), scene) for scene in scenes]
    stats = [transfer_with_stats(*scene)[1] for scene in scenes]

    def both(semantic, cues, classes):
        make_targets(transfer(semantic, cues, classes), semantic.shape, NUM_CLASSES)

    def both_point(semantic, cues, classes):
        instances = transfer(semantic, cues, classes)
        make_targets(instances, semantic.shape, NUM_CLASSES, point_centres=cues)

    def targets_only(instances, scene):
        make_targets(instances, scene[0].shape, NUM_CLASSES)

    time_per_image(both, scenes, 1)  # warm-up (imports, page faults, caches)
    figures = {
        "transfer": time_per_image(transfer, scenes, args.runs),
        "make_targets": time_per_image(targets_only, with_instances, args.runs),
        "transfer_plus_targets_cls": time_per_image(both, scenes, args.runs),
        "transfer_plus_targets_point": time_per_image(both_point, scenes, args.runs),
    }
    inputs = {
        "shape": [HEIGHT, WIDTH],
        "classes": NUM_CLASSES,
        "scenes": args.scenes,
        "runs": args.runs,
        "seed": args.seed,
        "threads": 1,
        "instances_per_image": statistics.mean(len(scene[1]) for scene in scenes),
        "components_per_image": statistics.mean(s["components"] for s in stats),
        "accepted_per_image": statistics.mean(s["accepted"] for s in stats),
    }
    targets = [
        check(
            f"transfer_plus_targets_{kind}.median_cpu_ms",
            figures[f"transfer_plus_targets_{kind}"]["median_cpu_ms"],
            3.0,
        )
        for kind in ("cls", "point")
    ]
    reference = {"official_cls_ms": 5.1, "official_point_ms": 5.7}
    emit(result("pseudo_labels", inputs, figures, targets=targets, reference=reference))


if __name__ == "__main__":
    main()
