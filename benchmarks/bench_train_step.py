"""Training-step throughput per backbone and the cost of online self-refinement (SPEC §4-5).

Times ``bestie.engine.instance_trainer.train_step`` (forward, refinement, losses, backward,
Adam and scheduler step) on pre-built batches, so data loading is not counted (see
bench_augmentation.py for the loader). Each case runs in a child process of its own (its
own memory and thread settings) under a time limit; a case that cannot run says why.

Cases (``--cases``):

- ``small_cpu``: the ``small`` backbone, 128² crops, batch 8, 3 classes (the default
  config), 2 torch threads; refinement on vs off, steps interleaved so both see the same
  load. Target: refinement adds < 10 % (median process CPU time per step).
- ``resnet50_cpu``: ResNet-50, 416², batch 2, 20 classes: a rough figure, skipped when the
  warm-up and one timed step do not finish within ``--cpu-budget`` seconds (default 60).
- ``resnet50_cuda``, ``hrnet_w48_cuda``: 416², batch 16, 20 classes, AMP and channels-last
  (as ``build_run`` sets them on CUDA); ResNet-50 refinement on vs off. Target: refinement
  adds < 5 % (median wall time per step, CUDA synchronised). Skipped without CUDA.

The batches are synthetic scenes (3-8 elliptical instances of 1-3 classes, a third of them
touching an instance of their class). A freshly initialised network predicts near-constant
maps, on which refinement finds nothing to split. To time refinement on the work it does
in training, the model's outputs get network-like maps added (``Realistic``: seg logits +3
on the true class, σ-6 centre Gaussians of amplitude U(0, 1), offsets to the instance centre
+ N(0, 0.7) noise, as in bench_refine_decode.py); the ``raw`` figures of ``small_cpu`` time
the plain network, as in the first iterations of training.

Usage: python benchmarks/bench_train_step.py [--cases small_cpu resnet50_cpu ...]
    [--device auto|cpu|cuda] [--steps N] [--cpu-budget 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np
import torch
from common import check, emit, result
from torch import nn

from bestie.config import Config
from bestie.data.targets import make_targets
from bestie.engine.distributed import Process
from bestie.engine.instance_trainer import build_run, train_step
from bestie.models.instance_net import build_instance_net
from bestie.refine import refine_targets
from bestie.structures import Instances

CASES = {
    "small_cpu": {"backbone": "small", "device": "cpu", "size": 128, "batch": 8, "classes": 3,
                  "compare": True, "raw": True, "steps": 12, "warmup": 2},
    "resnet50_cpu": {"backbone": "resnet50", "device": "cpu", "size": 416, "batch": 2,
                     "classes": 20, "compare": False, "raw": False, "steps": 1, "warmup": 1},
    "resnet50_cuda": {"backbone": "resnet50", "device": "cuda", "size": 416, "batch": 16,
                      "classes": 20, "compare": True, "raw": False, "steps": 20, "warmup": 5},
    "hrnet_w48_cuda": {"backbone": "hrnet_w48", "device": "cuda", "size": 416, "batch": 16,
                       "classes": 20, "compare": False, "raw": False, "steps": 20, "warmup": 5},
}  # fmt: skip
TARGETS = {"small_cpu": 10.0, "resnet50_cuda": 5.0}  # max refinement overhead, percent


def make_scene(rng: np.random.Generator, size: int, num_classes: int) -> dict[str, np.ndarray]:
    """One scene: WSSS map, instance ids, instance centres (y, x, class) and classes."""
    classes = rng.choice(num_classes, size=int(rng.integers(1, min(3, num_classes) + 1)),
                         replace=False)  # fmt: skip
    semantic = np.zeros((size, size), np.uint8)
    ids = np.zeros((size, size), np.int32)
    centers: list[tuple[int, int, int]] = []
    for index in range(int(rng.integers(3, 9))):
        class_id = int(rng.choice(classes))
        if centers and rng.random() < 0.35:  # touch an earlier instance of its class
            near_y, near_x, class_id = centers[int(rng.integers(len(centers)))]
            step = rng.integers(-size // 7, size // 7, size=2)
            center = np.clip((near_y + step[0], near_x + step[1]), 0, size - 1)
        else:
            center = rng.integers(size, size=2)
        axes = tuple(int(a) for a in rng.integers(size // 25, size // 6, size=2))
        blob = np.zeros((size, size), np.uint8)
        cy, cx = int(center[0]), int(center[1])
        cv2.ellipse(blob, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        semantic[blob > 0], ids[blob > 0] = class_id + 1, index + 1
        centers.append((cy, cx, class_id))
    return {"semantic": semantic, "ids": ids, "centers": np.asarray(centers), "classes": classes}


def network_like(scene: dict, rng: np.random.Generator, num_classes: int) -> dict:
    """Network-like seg logits, centre maps and offsets for a scene (module docstring)."""
    semantic, ids = scene["semantic"], scene["ids"]
    size = semantic.shape[0]
    seg = rng.standard_normal((num_classes + 1, size, size)).astype(np.float32)
    true_class = semantic[None].astype(np.int64)
    np.put_along_axis(seg, true_class, np.take_along_axis(seg, true_class, 0) + 3.0, axis=0)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    center = 0.02 * rng.standard_normal((num_classes, size, size)).astype(np.float32)
    offset = 0.7 * rng.standard_normal((2, size, size)).astype(np.float32)
    for index, (cy, cx, class_id) in enumerate(scene["centers"]):
        gaussian = rng.uniform(0, 1) * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / 72.0)
        center[class_id] = np.maximum(center[class_id], gaussian)
        mask = ids == index + 1
        offset[0][mask] += cy - rows[mask]
        offset[1][mask] += cx - cols[mask]
    return {"seg": seg, "center": center, "offset": offset}


def make_batch(rng: np.random.Generator, size: int, batch: int, num_classes: int) -> tuple:
    """A training batch as ``InstanceDataset`` items collate, and network-like outputs."""
    items, extras = [], []
    for _ in range(batch):
        scene = make_scene(rng, size, num_classes)
        visible = [i for i in range(len(scene["centers"])) if (scene["ids"] == i + 1).any()]
        masks = np.stack([scene["ids"] == i + 1 for i in visible]).reshape(-1, size, size)
        labels = scene["centers"][visible, 2] if visible else np.zeros(0, np.int64)
        center, offset, weight = make_targets(Instances(masks, labels), (size, size), num_classes)
        label = np.zeros(num_classes, np.float32)
        label[scene["classes"]] = 1.0
        items.append({
            "image": rng.standard_normal((3, size, size)).astype(np.float32),
            "semantic": scene["semantic"].astype(np.int64),
            "center": center, "offset": offset, "weight": weight, "image_label": label,
        })  # fmt: skip
        extras.append(network_like(scene, rng, num_classes))
    stack = {key: torch.from_numpy(np.stack([item[key] for item in items])) for key in items[0]}
    stack["points"] = torch.full((batch, 1, 3), -1, dtype=torch.long)
    stack["point_count"] = torch.zeros(batch, dtype=torch.long)
    extra = {key: torch.from_numpy(np.stack([e[key] for e in extras])) for key in extras[0]}
    return stack, extra


class Realistic(nn.Module):
    """Adds fixed network-like maps (``extra``, set per batch) to the network's outputs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.extra: dict[str, torch.Tensor] | None = None

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.net(image)
        if self.extra is None:
            return outputs
        return {key: value + self.extra[key] for key, value in outputs.items()}


def make_config(case: dict, refine: bool) -> Config:
    """The default config with the case's backbone, crop, batch and refinement switch."""
    base = Config()
    instance = dataclasses.replace(
        base.instance, backbone=case["backbone"], crop=case["size"],
        batch_size=case["batch"], amp=True, lr=5e-5,
    )  # fmt: skip
    return dataclasses.replace(
        base, instance=instance, refine=dataclasses.replace(base.refine, enabled=refine)
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(case: dict, refine: bool, realistic: bool, device: torch.device):
    """(config, run, model wrapper) for one variant; every variant starts from seed 0."""
    torch.manual_seed(0)
    net = build_instance_net(case["backbone"], case["classes"])
    model = Realistic(net) if realistic else net
    cfg = make_config(case, refine)
    return cfg, build_run(cfg, model, Process(0, 1, device)), model


def run_variants(case: dict, variants: dict, device: torch.device) -> tuple[dict, dict]:
    """Interleaved steps of every variant, warm-up dropped.

    Returns:
        {name: [(wall s, CPU s) per step]} and {name: refined centres per image}.
    """
    rng = np.random.default_rng(0)
    batches = [make_batch(rng, case["size"], case["batch"], case["classes"]) for _ in range(4)]
    extras = [{k: v.to(device) for k, v in extra.items()} for _, extra in batches]
    built = {name: build(case, *flags, device) for name, flags in variants.items()}
    times: dict[str, list] = {name: [] for name in variants}
    refined = dict.fromkeys(variants, 0.0)
    for step in range(case["warmup"] + case["steps"]):
        for name, (cfg, run, model) in built.items():
            batch_index = step % len(batches)
            if isinstance(model, Realistic):
                model.extra = extras[batch_index]
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            terms = train_step(run, batches[batch_index][0], cfg, step + 1)
            _sync(device)
            if step >= case["warmup"]:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
                refined[name] += float(terms[-1])  # after the clock: a sync on CUDA
    for name in variants:
        refined[name] /= case["steps"] * case["batch"]
    return times, refined


def refine_only_ms(case: dict, device: torch.device, runs: int = 5) -> dict[str, float]:
    """``refine_targets`` alone on one batch of network-like outputs (ms per step)."""
    rng = np.random.default_rng(1)
    batch, extra = make_batch(rng, case["size"], case["batch"], case["classes"])
    args = [extra["seg"], extra["center"], extra["offset"], batch["image_label"],
            batch["semantic"]]  # fmt: skip
    args = [tensor.to(device) for tensor in args]
    cfg = Config().refine
    samples = []
    for index in range(runs + 1):
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        refine_targets(*args, cfg)
        _sync(device)
        if index:
            samples.append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        "median_ms": round(1000 * statistics.median(s[0] for s in samples), 2),
        "median_cpu_ms": round(1000 * statistics.median(s[1] for s in samples), 2),
    }


def step_figures(samples: list, batch: int) -> dict[str, float]:
    """Median step time (wall, CPU) and images/s on each."""
    wall = statistics.median(s[0] for s in samples)
    cpu = statistics.median(s[1] for s in samples)
    return {
        "steps": len(samples),
        "median_step_ms": round(1000 * wall, 1),
        "min_step_ms": round(1000 * min(s[0] for s in samples), 1),
        "median_step_cpu_ms": round(1000 * cpu, 1),
        "images_per_s": round(batch / wall, 2),
        "images_per_cpu_s": round(batch / cpu, 2),
    }


def run_case(name: str, steps: int | None, threads: int) -> dict:
    """Measure one case in this process (the child side)."""
    case = dict(CASES[name])
    if steps:
        case["steps"] = steps
    device = torch.device(case["device"])
    if device.type == "cpu":
        torch.set_num_threads(threads)
    else:
        torch.backends.cudnn.benchmark = True
    variants = {"refine_on": (True, True)}
    if case["compare"]:
        variants["refine_off"] = (False, True)
    if case["raw"]:
        variants.update(raw_refine_on=(True, False), raw_refine_off=(False, False))
    times, refined = run_variants(case, variants, device)
    figures = {
        variant: {**step_figures(samples, case["batch"]),
                  "refined_centres_per_image": round(refined[variant], 2)}
        for variant, samples in times.items()
    }  # fmt: skip
    if case["compare"]:
        figures["refine_only"] = refine_only_ms(case, device)
        figures.update(overheads(figures, device))
    if device.type == "cuda":
        figures["max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return {"case": case, "figures": figures, "torch_threads": torch.get_num_threads()}


def overheads(figures: dict, device: torch.device) -> dict[str, float]:
    """Percent added by refinement to the median step time (realistic and raw outputs)."""
    key = "median_step_ms" if device.type == "cuda" else "median_step_cpu_ms"
    result_ = {}
    for prefix in ("", "raw_"):
        if f"{prefix}refine_off" in figures:
            on, off = figures[f"{prefix}refine_on"][key], figures[f"{prefix}refine_off"][key]
            result_[f"{prefix}refine_overhead_percent"] = round(100 * (on - off) / off, 1)
    result_["overhead_basis"] = key
    return result_


def spawn(name: str, args: argparse.Namespace) -> tuple[dict | None, str | None]:
    """Run one case in a child process: (its figures, None) or (None, why it has none)."""
    timeout = args.cpu_budget if name == "resnet50_cpu" else args.timeout
    command = [sys.executable, __file__, "--child", name, "--threads", str(args.threads)]
    if args.steps:
        command += ["--steps", str(args.steps)]
    started = time.perf_counter()
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"did not finish within {timeout} s (warm-up + timed steps); killed"
    if child.returncode != 0:
        return None, f"failed (exit {child.returncode}): {child.stderr.strip()[-600:]}"
    output = json.loads(child.stdout.strip().splitlines()[-1])
    output["wall_s"] = round(time.perf_counter() - started, 1)
    return output, None


def wanted(name: str, device: str) -> str | None:
    """Why a case is not run on this machine with ``--device``, or None."""
    case_device = CASES[name]["device"]
    if device not in ("auto", case_device):
        return f"--device {device}"
    if case_device == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available on this machine (GPU figures need a GPU)"
    return None


def case_inputs(case: dict, threads: int) -> dict:
    cuda = case["device"] == "cuda"
    return {
        "backbone": case["backbone"],
        "device": case["device"],
        "image": [case["batch"], 3, case["size"], case["size"]],
        "classes": case["classes"],
        "timed_steps": case["steps"],
        "warmup_steps": case["warmup"],
        "amp": cuda,
        "channels_last": cuda,
        "torch_threads": None if cuda else threads,
        "instances_per_image": "3-8 (1-3 classes, ~1/3 touching)",
    }


def targets(figures: dict, skipped: dict) -> list[dict]:
    """Refinement overhead: small CPU < 10 % (CPU time), ResNet-50 CUDA < 5 % (wall)."""
    checks = []
    for name, limit in TARGETS.items():
        found = figures.get(name, {})
        basis = found.get("overhead_basis", "n/a: " + skipped.get(name, "not run"))
        for prefix in ("", "raw_"):
            key = f"{prefix}refine_overhead_percent"
            if prefix and key not in found:
                continue
            checks.append(check(f"{name}.{key}", found.get(key), limit, unit="%", basis=basis))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: per case)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--cpu-budget", type=int, default=60, help="s for resnet50_cpu")
    parser.add_argument("--timeout", type=int, default=900, help="s for every other case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.steps, args.threads)))
        return
    figures, inputs, skipped = {}, {}, {}
    for name in args.cases:
        inputs[name] = case_inputs(CASES[name], args.threads)
        reason = wanted(name, args.device)
        output, reason = (None, reason) if reason else spawn(name, args)
        if reason:
            skipped[name] = reason
            continue
        inputs[name] = case_inputs(output["case"], output["torch_threads"] or args.threads)
        figures[name] = {**output["figures"], "child_wall_s": output["wall_s"]}
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    emit(
        result(
            "train_step", inputs, figures, targets=targets(figures, skipped),
            skipped=skipped, device=device,
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
