"""Speed of the instance network's training data path (SPEC §2.1, §11).

Synthetic VOC-sized scenes (375x500, random texture): 3-8 disjoint elliptical instances of
1-3 classes out of 20, with the WSSS map holding their classes and a band of 255. Single
thread (cv2 and torch). Prints one JSON object (``common.py`` shape) with per-image
milliseconds, wall and process CPU time (``*_cpu_ms``), over runs (each run a pass over
every scene):

- ``train_augmentation``: ``TrainAugmentation(416, 0.7, 1.3)`` on (image, map, masks, points);
- ``dataset_item``: ``InstanceDataset.__getitem__`` from in-memory arrays (no file decoding):
  checks, augmentation, ``make_targets`` on the transformed masks, tensors;
- ``official_style_augmentation``: for scale, the official pipeline's operations on (image,
  map, cues) only, rewritten from SPEC §2.1 (float64 resizes, HSV round trip on every image,
  pad then crop, torch normalisation). SPEC §11 measured the official code at ~5.0 ms on an
  idle machine; compare against this line when the machine is busy.

Usage: python benchmarks/bench_augmentation.py [--scenes 40] [--runs 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from common import emit, result

from bestie.data.instance_dataset import InstanceDataset
from bestie.data.transforms import Sample, TrainAugmentation
from bestie.structures import ImageRecord, Instances

HEIGHT, WIDTH, NUM_CLASSES, CROP = 375, 500, 20, 416


def make_scene(rng: np.random.Generator) -> tuple[ImageRecord, Sample]:
    """One record and its un-augmented sample (instances disjoint, later ones on top)."""
    image = cv2.GaussianBlur(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), (5, 5), 0)
    ids = np.zeros((HEIGHT, WIDTH), np.uint8)
    classes = rng.choice(NUM_CLASSES, size=int(rng.integers(1, 4)), replace=False)
    count = int(rng.integers(3, 9))
    labels = rng.choice(classes, size=count)
    centres = []
    for index in range(count):
        cy, cx = int(rng.integers(40, HEIGHT - 40)), int(rng.integers(40, WIDTH - 40))
        axes = (int(rng.integers(15, 70)), int(rng.integers(15, 70)))
        cv2.ellipse(ids, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, index + 1, -1)
        centres.append((cy, cx, int(labels[index])))
    masks = ids[None] == np.arange(1, count + 1, dtype=np.uint8)[:, None, None]
    semantic = np.where(ids > 0, np.append(0, labels + 1)[ids], 0).astype(np.uint8)
    semantic[:, 200:204] = 255
    record = ImageRecord(0, "scene", "memory", HEIGHT, WIDTH, tuple(sorted(set(labels.tolist()))))
    points = np.asarray(centres, np.int64)
    return record, Sample(image, semantic, Instances(masks, labels), points)


def official_style(image: np.ndarray, seg_map: np.ndarray, cues: list) -> tuple:
    """The official operations on (image, map, cues [x, y, cls]), python ``random``."""
    pixels = image.astype(np.float32)
    if random.random() < 0.5:
        pixels = np.clip(pixels + random.uniform(-16, 16), 0, 255)
    contrast_first = random.random() < 0.5
    if contrast_first and random.random() < 0.5:
        pixels = np.clip(pixels * random.uniform(0.5, 1.5), 0, 255)
    hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV)
    if random.random() < 0.5:
        hsv[:, :, 0] += random.uniform(-36, 36)
        hsv[:, :, 0][hsv[:, :, 0] > 360] -= 360
        hsv[:, :, 0][hsv[:, :, 0] < 0] += 360
    pixels = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and random.random() < 0.5:
        pixels = np.clip(pixels * random.uniform(0.5, 1.5), 0, 255)
    image = np.clip(pixels, 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    size = (449, 353) if width > height else (353, 449)
    image = cv2.resize(image.astype(np.float64), size, interpolation=cv2.INTER_LINEAR)
    seg_map = cv2.resize(seg_map.astype(np.float64), size, interpolation=cv2.INTER_NEAREST)
    cues = [[int(x / width * size[0]), int(y / height * size[1]), c] for x, y, c in cues]
    scale = float(np.linspace(0.7, 1.3, 7)[random.randrange(7)])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    seg_map = cv2.resize(seg_map, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    image, seg_map = image.astype(np.uint8), seg_map.astype(np.uint8)
    cues = [[x * scale, y * scale, c] for x, y, c in cues]
    pad_h, pad_w = max(CROP - image.shape[0], 0), max(CROP - image.shape[1], 0)
    top, left = random.randint(0, pad_h), random.randint(0, pad_w)
    border = (top, pad_h - top, left, pad_w - left)
    image = cv2.copyMakeBorder(image, *border, cv2.BORDER_CONSTANT, value=(123, 116, 103))
    seg_map = cv2.copyMakeBorder(seg_map, *border, cv2.BORDER_CONSTANT, value=0)
    y0 = random.randint(0, image.shape[0] - CROP)
    x0 = random.randint(0, image.shape[1] - CROP)
    image = np.asarray(image[y0 : y0 + CROP, x0 : x0 + CROP], np.float32).astype(np.uint8)
    seg_map = torch.from_numpy(seg_map[y0 : y0 + CROP, x0 : x0 + CROP].copy())
    cues = [[x + left - x0, y + top - y0, c] for x, y, c in cues]
    cues = [cue for cue in cues if 0 <= cue[0] < CROP and 0 <= cue[1] < CROP]
    tensor = TF.to_tensor(image)
    if random.random() < 0.5:
        tensor, seg_map = tensor.flip(2), seg_map.flip(1)
        cues = [[CROP - 1 - x, y, c] for x, y, c in cues]
    tensor = TF.normalize(tensor, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return tensor, seg_map, [[math.trunc(x), math.trunc(y), c] for x, y, c in cues]


def time_per_image(functions: dict, count: int, runs: int) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each function(index) over ``runs`` passes of ``count`` calls.

    The functions are interleaved call by call, so a busy machine slows them alike. Every
    pass repeats the same work (the randomness is seeded per index), so the fastest run of
    each call estimates its cost on an idle machine: ``fastest_ms`` is the mean of those over
    the calls, ``median_pass_ms`` the median over passes of the mean per call; ``*_cpu_ms``
    the same on process CPU time.
    """
    wall = {name: np.zeros((runs, count)) for name in functions}
    cpu = {name: np.zeros((runs, count)) for name in functions}
    for run in range(runs):
        for index in range(count):
            for name, function in functions.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                function(index)
                wall[name][run, index] = (time.perf_counter() - start) * 1e3
                cpu[name][run, index] = (time.process_time() - start_cpu) * 1e3
    return {name: {**_stats(wall[name], ""), **_stats(cpu[name], "_cpu")} for name in functions}


def _stats(values: np.ndarray, suffix: str) -> dict[str, float]:
    return {
        f"fastest{suffix}_ms": round(float(values.min(axis=0).mean()), 3),
        f"median_pass{suffix}_ms": round(float(np.median(values.mean(axis=1))), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    rng = np.random.default_rng(args.seed)
    scenes = [make_scene(rng) for _ in range(args.scenes)]
    augmentation = TrainAugmentation(CROP, 0.7, 1.3)
    records = [dataclass_replace_id(record, index) for index, (record, _) in enumerate(scenes)]
    samples = [sample for _, sample in scenes]
    dataset = InstanceDataset(
        records,
        {index: sample.instances for index, sample in enumerate(samples)},
        lambda record: samples[record.id].semantic,
        NUM_CLASSES,
        augmentation,
        seed=args.seed,
        image_loader=lambda file: samples[int(file)].image,
    )
    cues = [[[int(x), int(y), int(c)] for y, x, c in sample.points] for sample in samples]

    def augment(index: int) -> None:
        augmentation(samples[index], np.random.default_rng((args.seed, index)))

    def official(index: int) -> None:
        random.seed(args.seed * 1_000_003 + index)
        official_style(samples[index].image, samples[index].semantic, cues[index])

    figures = time_per_image(
        {
            "train_augmentation": augment,
            "dataset_item": dataset.__getitem__,
            "official_style_augmentation": official,
        },
        len(samples),
        args.runs,
    )
    inputs = {
        "image_size": [HEIGHT, WIDTH],
        "crop": CROP,
        "scenes": args.scenes,
        "runs": args.runs,
        "instances_per_image": statistics.mean(len(sample.instances) for sample in samples),
        "threads": 1,
    }
    reference = {"official_augmentation_ms_spec_11": 5.0}
    emit(result("augmentation", inputs, figures, reference=reference))


def dataclass_replace_id(record: ImageRecord, index: int) -> ImageRecord:
    """The record with id ``index`` and its in-memory "file" named by the index."""
    return ImageRecord(index, f"scene_{index}", str(index), record.height, record.width,
                       record.classes)  # fmt: skip


if __name__ == "__main__":
    main()
