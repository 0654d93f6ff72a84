"""Host-device synchronisations of refinement and of the training step (a static check on CPU).

On CUDA, reading a device tensor on the host (``.item()``, ``.tolist()``, ``.cpu()``,
``.numpy()``, ``bool()``/``int()``/``float()``/``__index__``), an op whose output size
depends on the data (``nonzero``, boolean-mask indexing, ``unique``, ``masked_select``) and a
blocking upload from pageable host memory (``torch.from_numpy(a).to(device)``,
``torch.tensor(data, device=...)``, ``new_tensor``) each make the host wait for the GPU.

Without a GPU this script finds them by tracing one call on CPU tensors: a
``TorchFunctionMode`` marks the call's input tensors (and, for a training step, the model's
parameters and buffers) as "device" tensors, propagates the mark through every torch op and
to factories given an explicit ``device=``, and records, with its call site, every host read
of a marked tensor, every data-dependent-shape op on one and every upload of an unmarked
(host) tensor. Non-blocking uploads (pinned batches) are listed apart: they do not sync.

Traced calls:

- ``refine_targets`` on one B = 4 batch of 416 x 416 network-like outputs (the scenes of
  bench_refine_decode.py), with the number of semantic components it visits;
- ``train_step`` of the small backbone at 128², batch 8 (bench_train_step.py's batch and
  network-like outputs), refinement on: the syncs outside refinement too.

With CUDA, both calls also run on the GPU under ``torch.cuda.set_sync_debug_mode("warn")``
and the warnings PyTorch raises are counted (AMP's ``GradScaler.step`` reads ``found_inf``
with ``.item()`` once per step; that one is only visible there).

Usage: python benchmarks/bench_syncs.py [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from common import emit, result
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

import bestie

HOST_READS = {
    Tensor.item: "item",
    Tensor.tolist: "tolist",
    Tensor.cpu: "cpu",
    Tensor.numpy: "numpy",
    Tensor.__bool__: "bool",
    Tensor.__int__: "int",
    Tensor.__float__: "float",
    Tensor.__index__: "index",
}
SHAPE_OPS = {
    torch.nonzero: "nonzero",
    Tensor.nonzero: "nonzero",
    torch.argwhere: "argwhere",
    torch.masked_select: "masked_select",
    Tensor.masked_select: "masked_select",
    torch.unique: "unique",
    Tensor.unique: "unique",
    torch.unique_consecutive: "unique_consecutive",
    torch.repeat_interleave: "repeat_interleave",
    Tensor.repeat_interleave: "repeat_interleave",
}
UPLOAD_FACTORIES = {torch.tensor: "torch.tensor", torch.as_tensor: "torch.as_tensor"}
LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(bestie.__file__))) + os.sep
MARK = "_bench_on_device"


def _mark(value: Any) -> None:
    for leaf in tree_leaves(value):
        if isinstance(leaf, Tensor):
            setattr(leaf, MARK, True)


def _marked(value: Any) -> bool:
    leaves = tree_leaves(value)
    return any(isinstance(leaf, Tensor) and getattr(leaf, MARK, False) for leaf in leaves)


def _has_device_argument(args: tuple, kwargs: dict) -> bool:
    if kwargs.get("device") is not None or isinstance(kwargs.get("other"), Tensor):
        return True
    return any(isinstance(arg, torch.device | str | Tensor) for arg in args[1:2])


class SyncTracer(TorchFunctionMode):
    """Records the would-be host-device synchronisations of the torch calls it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.events: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        on_device = _marked((args, kwargs))
        kind = self._classify(func, args, kwargs, on_device)
        if kind is not None:
            self.events[(*kind, _call_site())] += 1
        out = func(*args, **kwargs)
        if func is Tensor.cpu and out is args[0]:  # on the CPU .cpu() returns self
            out = out.view_as(out)
        elif func is not Tensor.cpu and self._on_device_result(kind, on_device, kwargs):
            _mark(out)
        return out

    @staticmethod
    def _on_device_result(kind: tuple[str, str] | None, on_device: bool, kwargs: dict) -> bool:
        """An op on device tensors, an upload, or a factory given ``device=``."""
        uploaded = kind is not None and kind[0] in ("upload", "async_upload")
        return on_device or uploaded or kwargs.get("device") is not None

    @staticmethod
    def _classify(func, args, kwargs, on_device) -> tuple[str, str] | None:
        """(category, what) of a call that would synchronise, or None."""
        if func in HOST_READS and on_device:
            return "host_read", HOST_READS[func]
        if func in SHAPE_OPS and on_device:
            return "data_dependent_shape", SHAPE_OPS[func]
        if func in (Tensor.__getitem__, Tensor.__setitem__) and on_device:
            index = args[1] if len(args) > 1 else None
            if any(isinstance(leaf, Tensor) and leaf.dtype == torch.bool
                   for leaf in tree_leaves(index)):  # fmt: skip
                return "data_dependent_shape", f"boolean-mask {func.__name__}"
        if func in UPLOAD_FACTORIES and kwargs.get("device") is not None:
            return "upload", UPLOAD_FACTORIES[func]
        if func is Tensor.new_tensor and on_device:
            return "upload", "new_tensor"
        if func is Tensor.to and not on_device and _has_device_argument(args, kwargs):
            blocking = not kwargs.get("non_blocking", False)
            return ("upload" if blocking else "async_upload"), "to(device)"
        return None


def _call_site() -> str:
    """file:line function of the innermost library frame (else the innermost caller)."""
    frame = sys._getframe(2)
    fallback = None
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(LIBRARY + "bestie" + os.sep):
            return f"{name[len(LIBRARY) :]}:{frame.f_lineno} {frame.f_code.co_name}"
        if fallback is None and "/torch/overrides" not in name and __file__ not in name:
            fallback = f"{_short(name)}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return fallback or "?"


def _short(path: str) -> str:
    marker = "site-packages" + os.sep
    return path.split(marker, 1)[1] if marker in path else os.path.basename(path)


def summarise(events: collections.Counter, per: dict[str, int]) -> dict[str, Any]:
    """Totals per category and per (category, what), the call sites, and rates."""
    categories: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    sites: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (category, what, site), count in events.items():
        categories[category] += count
        kinds[f"{category}: {what}"] += count
        sites[site][f"{category}: {what}"] += count
    syncs = sum(n for category, n in categories.items() if category != "async_upload")
    output: dict[str, Any] = {
        "syncs": syncs,
        "by_category": dict(categories),
        "by_kind": dict(kinds.most_common()),
        "call_sites": {site: dict(counter) for site, counter in sorted(sites.items())},
    }
    for name, count in per.items():
        output[f"syncs_per_{name}"] = round(syncs / max(count, 1), 2)
    return output


def trace(function: Callable[[], object], inputs: Any) -> collections.Counter:
    """The events of one call of ``function`` with ``inputs`` marked as device tensors."""
    _mark(inputs)
    tracer = SyncTracer()
    with tracer:
        function()
    return tracer.events


def cuda_sync_warnings(function: Callable[[], object]) -> dict[str, Any]:
    """Synchronising CUDA calls that ``set_sync_debug_mode('warn')`` reports in one call."""
    function()  # warm-up: lazy initialisation syncs are not the step's
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    sites = collections.Counter(
        f"{_short(w.filename)}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)
    )
    return {"warnings": sum(sites.values()), "call_sites": dict(sites.most_common())}


def refine_case(device: torch.device) -> tuple[Callable[[], object], list[Tensor], dict]:
    """refine_targets on a B = 4, 416 x 416 batch of bench_refine_decode.py scenes."""
    from bench_refine_decode import make_scene

    from bestie.components import label_components
    from bestie.refine import refine_targets
    from bestie.sections import RefineConfig

    rng = np.random.default_rng(0)
    scenes = [make_scene(rng, 416, 416) for _ in range(4)]
    keys = ("seg", "center", "offset", "label", "semantic")
    inputs = [torch.stack([scene[key] for scene in scenes]).to(device) for key in keys]
    components = sum(
        len(label_components(scene["semantic"].numpy() == c + 1, min_area=50)[1])
        for scene in scenes
        for c in np.flatnonzero(scene["label"].numpy()).tolist()
    )
    counts = {"batch": 1, "image": len(scenes), "component": components}
    return lambda: refine_targets(*inputs, RefineConfig()), inputs, counts


def train_step_case(device: torch.device) -> tuple[Callable[[], object], list[Tensor], dict]:
    """One train_step of the small backbone (128², batch 8, refinement on), after a warm-up."""
    from bench_train_step import CASES, build, make_batch

    from bestie.engine.instance_trainer import train_step

    case = CASES["small_cpu"]
    batch, extra = make_batch(np.random.default_rng(0), case["size"], case["batch"], 3)
    cfg, run, model = build(case, True, True, device)
    model.extra = {key: value.to(device) for key, value in extra.items()}
    train_step(run, batch, cfg, 1)  # optimiser state exists before the traced step
    device_tensors = [*model.parameters(), *model.buffers(), *model.extra.values()]
    counts = {"step": 1, "image": case["batch"]}
    return lambda: train_step(run, batch, cfg, 2), device_tensors, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures, skipped = {}, {}
    cpu = torch.device("cpu")
    for name, make in (("refine_targets", refine_case), ("train_step_small", train_step_case)):
        function, device_tensors, counts = make(cpu)
        with torch.no_grad() if name == "refine_targets" else contextlib.nullcontext():
            figures[name] = summarise(trace(function, device_tensors), counts)
        figures[name]["counted_per"] = counts
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        for name, make in (("refine_targets", refine_case), ("train_step_small", train_step_case)):
            function, _, _ = make(torch.device("cuda"))
            figures[f"{name}_cuda_sync_debug"] = cuda_sync_warnings(function)
    else:
        reason = "--device cpu" if args.device == "cpu" else "CUDA is not available"
        skipped["cuda_sync_debug_mode"] = reason
    inputs = {
        "refine_targets": "seg [4,21,416,416], center [4,20,416,416], offset [4,2,416,416]",
        "train_step_small": "small backbone, image [8,3,128,128], 3 classes, refine on",
        "traced_on": "cpu (TorchFunctionMode)",
        "torch_threads": args.threads,
    }
    notes = (
        "host_read: a device tensor read on the host; data_dependent_shape: output size "
        "depends on values (CUDA syncs to size it); upload: blocking copy from pageable host "
        "memory (cudaMemcpy + stream sync); async_upload: non_blocking copy (no sync)"
    )
    device = "cuda" if use_cuda else "cpu"
    emit(result("syncs", inputs, figures, skipped=skipped, notes=notes, device=device))


if __name__ == "__main__":
    main()
