"""Summaries of every pipeline artifact, for ``python -m bestie inspect`` (DESIGN.md §7).

:func:`inspect_artifact` recognises an artifact by its format marker, extension or content
and returns a plain, JSON-serialisable summary (counts, classes, score ranges, progress);
:func:`format_summary` renders it as indented text. :func:`find_dataset_file` locates the
records or ground truth of a split from an artifact's place in ``results/{exp}/...``, for
the commands that need them (``show``).

Every torch file is read with ``weights_only=True``; nothing executes code from a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bestie.artifacts import CUES_FORMAT, RECORDS_FORMAT, read_cue_file, read_json
from bestie.structures import IGNORE_LABEL

PSEUDO_FORMAT = "bestie.pseudo/1"  # bestie.stages.synthesize_pseudo_labels.PSEUDO_FORMAT
CUE_STATS_FORMAT = "bestie.cue_stats/1"
CHECKPOINT_FORMAT = "bestie.checkpoint/1"  # bestie.engine.checkpoint (no torch import here)
MODEL_FORMAT = "bestie.model/1"
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


# ----------------------------------------------------------------------------- entry points
def inspect_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise one artifact: ``{"path", "kind", ...figures}``.

    Raises:
        ValueError: the path does not exist or is no artifact of the pipeline.
    """
    target = Path(path)
    if target.is_dir():
        summary = _label_maps(target)
    elif not target.is_file():
        raise ValueError(f"{target}: no such file or folder")
    else:
        reader = _READERS.get(target.suffix.lower())
        if reader is None:
            raise ValueError(
                f"{target}: unknown artifact type (extension {target.suffix or 'none'!r}; "
                f"known: {', '.join(sorted(_READERS))} or a folder of WSSS maps)"
            )
        summary = reader(target)
    return {"path": str(target), **summary}


def format_summary(summary: Mapping[str, Any], indent: int = 0) -> str:
    """Indented ``key: value`` lines; nested mappings indent, short lists stay on one line."""
    lines = []
    pad = "  " * indent
    for key, value in summary.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:")
            lines.append(format_summary(value, indent + 1))
        else:
            lines.append(f"{pad}{key}: {_text(value)}")
    return "\n".join(lines)


def find_dataset_file(artifact: str | os.PathLike[str], split: str, suffix: str = "") -> Path:
    """``dataset/{split}{suffix}.json`` belonging to an artifact under ``results/{exp}/``.

    Looks in the artifact's own experiment first, then in the other experiments of the same
    ``results/`` folder (an experiment shares the data set of the first experiment with the
    same dataset config, so its own ``dataset/`` may not exist); several candidates must be
    byte-identical.

    Args:
        artifact: a file or folder somewhere under ``results/{exp}/``.
        split: the split name (``train``, ``val``).
        suffix: ``""`` for the records, ``"_gt"`` for the COCO ground truth.

    Raises:
        ValueError: no such file, or different candidates (pass the file explicitly).
    """
    name = f"{split}{suffix}.json"
    resolved = Path(artifact).resolve()
    experiment = next((p for p in resolved.parents if p.parent.name == "results"), None)
    if experiment is None:
        raise ValueError(f"{artifact}: not under results/{{exp}}/; give dataset/{name} explicitly")
    own = experiment / "dataset" / name
    if own.is_file():
        return own
    candidates = sorted(experiment.parent.glob(f"*/dataset/{name}"))
    digests = {hashlib.sha1(c.read_bytes()).hexdigest() for c in candidates}
    if len(digests) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(
            f"{artifact}: no dataset/{name} in {experiment.parent}; give it explicitly"
        )
    raise ValueError(
        f"{artifact}: {len(candidates)} different dataset/{name} files in {experiment.parent} "
        f"({', '.join(c.parent.parent.name for c in candidates)}); give one explicitly"
    )


def split_of(path: str | os.PathLike[str]) -> str:
    """The split an artifact belongs to, from its name (``pred_val.json``, ``val_1``,
    ``val_gt.json``, ``pseudo_gt_train.json`` → ``val``, ``val``, ``val``, ``train``)."""
    stem = Path(path).stem
    for prefix in ("pred_", "miou_", "instance_curve_", "instance_", "pseudo_gt_"):
        if stem.startswith(prefix):
            stem = stem[len(prefix) :]
            break
    return re.sub(r"_gt$|_\d+$", "", stem)  # the GT of a split, a shard's number


# ----------------------------------------------------------------------------- helpers
def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{}"
    return "-" if value is None else str(value)


def _range(values: Iterable[float]) -> dict[str, float] | None:
    array = np.asarray(list(values), np.float64)
    if array.size == 0:
        return None
    return {"min": float(array.min()), "median": float(np.median(array)), "max": float(array.max())}


def _per_class(labels: Iterable[int], names: list[str] | None = None) -> dict[str, int]:
    counts = Counter(int(label) for label in labels)
    return {_class_name(c, names): counts[c] for c in sorted(counts)}


def _class_name(class_id: int, names: list[str] | None) -> str:
    if names is not None and 0 <= class_id < len(names):
        return names[class_id]
    return f"class {class_id}"


def _category_names(categories: list[dict[str, Any]]) -> list[str]:
    ordered = sorted(categories, key=lambda c: int(c["id"]))
    return [str(c.get("name", c["id"])) for c in ordered]


# ----------------------------------------------------------------------------- JSON artifacts
def _json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if data == [] and path.stem.startswith("instance_curve_"):  # trained without snapshots
        return {"kind": "evaluation curve", **_curve(data, path)}
    for kind, matches, summarise in _JSON_KINDS:
        if matches(data):
            return {"kind": kind, **summarise(data, path)}
    keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{path}: unknown JSON artifact (top level: {keys})")


def _records(data: dict[str, Any], path: Path) -> dict[str, Any]:
    names = _category_names(data["categories"])
    images = data["images"]
    points = [p for image in images for p in image.get("points", [])]
    sizes = Counter(f"{image['height']}x{image['width']}" for image in images)
    return {
        "dataset": data.get("dataset"),
        "split": data.get("split"),
        "images": len(images),
        "categories": names,
        "images_per_class": _per_class((c for i in images for c in i["classes"]), names),
        "images_without_labels": sum(1 for image in images if not image["classes"]),
        "points": len(points),
        "points_per_class": _per_class((p[2] for p in points), names),
        "image_sizes": dict(sizes.most_common(5)),
    }


def _coco_gt(data: dict[str, Any], path: Path) -> dict[str, Any]:
    names = _category_names(data["categories"])
    annotations = data["annotations"]
    with_instances = {int(a["image_id"]) for a in annotations}
    return {
        "images": len(data["images"]),
        "categories": names,
        "instances": len(annotations),
        "instances_per_class": _per_class((a["category_id"] for a in annotations), names),
        "images_without_instances": sum(
            1 for image in data["images"] if int(image["id"]) not in with_instances
        ),
        "crowd": sum(1 for a in annotations if a.get("iscrowd")),
        "area": _range(a["area"] for a in annotations if "area" in a),
    }


def _pseudo_labels(data: dict[str, Any], path: Path) -> dict[str, Any]:
    summary = _coco_gt(data, path)
    summary.pop("crowd")
    summary["sources"] = {k: v for k, v in data["info"].items() if k != "format"}
    stats = path.with_name("stats.json")
    if stats.is_file():
        summary["stats"] = read_json(stats)
    return summary


def _pseudo_shard(data: dict[str, Any], path: Path) -> dict[str, Any]:
    annotations = data["annotations"]
    return {
        "images": len(data["images"]),
        "instances": len(annotations),
        "instances_per_class": _per_class(
            (a["category_id"] for a in annotations), _names_beside(path)
        ),
        "stats": data["stats"],
    }


def _predictions(data: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    return {
        "predictions": len(data),
        "images_with_predictions": len({int(entry["image_id"]) for entry in data}),
        "score": _range(entry["score"] for entry in data),
        "per_class": _per_class((e["category_id"] for e in data), _names_beside(path)),
    }


def _cue_stats(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Per split: image counts and the totals at both cue cuts (per class: see the file)."""
    summary: dict[str, Any] = {"cue_threshold": data.get("cue_threshold")}
    for split, figures in data["splits"].items():
        summary[split] = {
            key: value["total"] if isinstance(value, dict) and "total" in value else value
            for key, value in figures.items()
        }
    return summary


def _evaluation(data: dict[str, Any], path: Path) -> dict[str, Any]:
    return {key: value for key, value in data.items() if not isinstance(value, dict | list)}


def _curve(data: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    return {"snapshots": len(data), "points": {f"iter {e['iteration']}": e for e in data}}


def _miou(data: dict[str, Any], path: Path) -> dict[str, Any]:
    return {key: data[key] for key in ("images", "miou", "pixel_accuracy", "iou") if key in data}


def _plain(data: dict[str, Any], path: Path) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "format"}


def _marked(marker: str, inside: str = "") -> Callable[[Any], bool]:
    def matches(data: Any) -> bool:
        holder = data.get(inside) if inside and isinstance(data, dict) else data
        return isinstance(holder, dict) and holder.get("format") == marker

    return matches


def _has(*keys: str) -> Callable[[Any], bool]:
    return lambda data: isinstance(data, dict) and all(key in data for key in keys)


def _list_of(*keys: str) -> Callable[[Any], bool]:
    def matches(data: Any) -> bool:
        if not isinstance(data, list):
            return False
        return all(isinstance(e, dict) and all(k in e for k in keys) for e in data)

    return matches


def _is_eval(data: Any) -> bool:
    return isinstance(data, dict) and any(str(key).startswith("mAP") for key in data)


_JSON_KINDS: list[tuple[str, Callable[[Any], bool], Callable[[Any, Path], dict[str, Any]]]] = [
    ("records", _marked(RECORDS_FORMAT), _records),
    ("pseudo labels", _marked(PSEUDO_FORMAT, inside="info"), _pseudo_labels),
    ("cue statistics", _marked(CUE_STATS_FORMAT), _cue_stats),
    ("COCO ground truth", _has("images", "annotations", "categories"), _coco_gt),
    ("pseudo-label shard", _has("images", "annotations", "stats"), _pseudo_shard),
    ("WSSS mIoU", _has("miou", "iou"), _miou),
    ("pseudo-label statistics", _has("components", "accepted"), _plain),
    ("evaluation", _is_eval, _evaluation),
    ("classifier metrics", _has("micro_f1", "macro_f1"), _evaluation),
    ("WSSS shard confusion", _has("images", "matrix"), lambda d, p: {"images": d["images"]}),
    # Any other empty list is read as predictions: a model that found nothing writes ``[]``.
    ("predictions", _list_of("image_id", "category_id", "segmentation", "score"), _predictions),
    ("evaluation curve", _list_of("iteration"), _curve),
]


# ----------------------------------------------------------------------------- other files
def _cues(path: Path) -> dict[str, Any]:
    attrs, cues = read_cue_file(path, with_maps=False)  # validates; maps are read below
    try:
        names = list(json.loads(attrs.get("categories", "null")) or []) or None
    except json.JSONDecodeError:
        names = None
    peaks = [entry.peaks for entry in cues.values()]
    rows = np.concatenate(peaks) if peaks else np.zeros((0, 4), np.float32)
    summary: dict[str, Any] = {
        "kind": "instance cues",
        "format": CUES_FORMAT,
        **{key: attrs[key] for key in ("source", "classifier", "shard") if attrs.get(key)},
        "images": len(cues),
        "images_without_peaks": sum(1 for p in peaks if len(p) == 0),
        "peaks": len(rows),
        "peaks_per_class": _per_class(rows[:, 2].astype(np.int64), names),
        "score": _range(rows[:, 3]),
    }
    return {**summary, **_cue_maps(path)}


def _cue_maps(path: Path) -> dict[str, Any]:
    """How many images store class maps, with their strides: metadata only (files are big)."""
    import h5py

    with h5py.File(path, "r") as handle:
        maps = [group["maps"] for group in handle["images"].values() if "maps" in group]
        strides = sorted({int(dataset.attrs["stride"]) for dataset in maps})
        return {"maps_stored": len(maps), "map_strides": strides}


def _torch_file(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{path}: not a weights-only torch file ({error})") from error
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        extra = payload.get("extra", {})
        return {
            "kind": "checkpoint",
            "format": CHECKPOINT_FORMAT,
            "progress": payload["progress"],
            "key": payload["key"],
            "states": {
                name: f"{len(state)} entries" if isinstance(state, dict) else type(state).__name__
                for name, state in payload["states"].items()
            },
            "extra": {k: f"{len(v)} items" if isinstance(v, list) else v for k, v in extra.items()},
        }
    if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
        return {
            "kind": "model",
            "format": MODEL_FORMAT,
            "metadata": payload["metadata"],
            **_parameter_count(payload["model"]),
        }
    if isinstance(payload, dict) and payload and all(torch.is_tensor(v) for v in payload.values()):
        return {"kind": "state dict", **_parameter_count(payload)}
    raise ValueError(f"{path}: a torch file that is neither a checkpoint nor a model file")


def _parameter_count(state: Mapping[str, Any]) -> dict[str, int]:
    learnable = sum(
        int(value.numel())
        for name, value in state.items()
        if value.is_floating_point() and not name.endswith(_BUFFER_SUFFIXES)
    )
    return {"tensors": len(state), "parameters": learnable}


def _csv(path: Path) -> dict[str, Any]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=delimiter))
    if rows and None in rows[-1]:
        raise ValueError(f"{path}: rows have more fields than the header")
    kind = "training log" if path.suffix.lower() == ".csv" else "table"
    summary: dict[str, Any] = {"kind": kind, "rows": len(rows)}
    if rows:
        summary["columns"] = list(rows[0])
        summary["last"] = dict(rows[-1])
    return summary


def _label_maps(path: Path) -> dict[str, Any]:
    """One WSSS map (a PNG) or a folder of them: sizes and pixel fractions per class."""
    from bestie.data.io import read_label_map

    maps = sorted(path.glob("*.png")) if path.is_dir() else [path]
    if not maps:
        raise ValueError(f"{path}: a folder without label maps (*.png) is no artifact")
    counts = np.zeros(256, np.int64)
    sizes: Counter[str] = Counter()
    for png in maps:
        semantic = read_label_map(png)
        counts += np.bincount(semantic.ravel(), minlength=256)
        sizes[f"{semantic.shape[0]}x{semantic.shape[1]}"] += 1
    folder = path if path.is_dir() else path.parent
    return {
        "kind": "WSSS maps" if path.is_dir() else "WSSS map",
        "images": len(maps),
        "image_sizes": dict(sizes.most_common(5)),
        "pixel_fractions": _fractions(counts, _names_beside(folder)),
    }


def _names_beside(artifact: Path) -> list[str] | None:
    """Class names from the artifact's split's records, or None when they cannot be found."""
    try:
        records = find_dataset_file(artifact, split_of(artifact))
        return _category_names(read_json(records)["categories"])
    except ValueError:
        return None  # classes are then shown by index


def _fractions(counts: np.ndarray, names: list[str] | None) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    special = {0: "background", IGNORE_LABEL: "ignore"}
    return {
        special.get(value) or _class_name(value - 1, names): round(counts[value] / total, 6)
        for value in np.flatnonzero(counts).tolist()
    }


_READERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    ".json": _json,
    ".h5": _cues,
    ".hdf5": _cues,
    ".pt": _torch_file,
    ".pth": _torch_file,
    ".csv": _csv,
    ".tsv": _csv,
    ".png": _label_maps,
}
