"""Report tables (pandas): the Table-1 summary, its mean ± std over seeds, stage statistics.

Pure functions from parsed artifacts (dicts, lists, data frames) to data frames, and two
writers (TSV for data, a small standalone HTML page for the Snakemake report, which embeds
HTML but only offers other text files for download). Metrics are in percent, as in the
``eval/*.json`` files; undefined values are NaN in frames and ``NA`` in files.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bestie.artifacts import CUE_STAT_KEYS, write_text

# Table 1 of the paper reports VOC mAP at these IoUs and COCO mask AP.
VOC_METRICS = ("mAP25", "mAP50", "mAP70", "mAP75")
COCO_METRICS = ("COCO_AP", "COCO_AP50", "COCO_AP75")
CUE_COUNTS = CUE_STAT_KEYS


@dataclass(frozen=True)
class SummaryRow:
    """One (experiment, model) line of the summary; ``metrics`` is None when not evaluated.

    Attributes:
        experiment: experiment name (``{name}_seed{s}`` with ``seeds:``).
        model: ``instance`` or ``maskrcnn``.
        supervision: ``image`` or ``point``.
        seed: the experiment's training seed.
        metrics: the parsed ``eval/{model}_{split}.json``, or None.
    """

    experiment: str
    model: str
    supervision: str
    seed: int
    metrics: Mapping[str, Any] | None


def seed_group(experiment: str, seed: int) -> str:
    """The experiment name without its ``_seed{seed}`` suffix (seeds of one variant group)."""
    suffix = f"_seed{seed}"
    return experiment[: -len(suffix)] if experiment.endswith(suffix) else experiment


def metric_columns(rows: Sequence[SummaryRow]) -> list[str]:
    """Table 1's metrics plus any other ``mAP{iou}`` the evaluations hold, in IoU order."""
    voc = set(VOC_METRICS)
    for row in rows:
        voc.update(key for key in (row.metrics or {}) if re.fullmatch(r"mAP\d+", key))
    return sorted(voc, key=lambda key: int(key[3:])) + list(COCO_METRICS)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def summary_table(rows: Sequence[SummaryRow]) -> pd.DataFrame:
    """One line per row: experiment, model, supervision, seed, the metrics, counts, note."""
    metrics = metric_columns(rows)
    lines = []
    for row in rows:
        found = row.metrics or {}
        line: dict[str, Any] = {
            "experiment": row.experiment,
            "model": row.model,
            "supervision": row.supervision,
            "seed": row.seed,
        }
        line.update({key: _number(found.get(key)) for key in metrics})
        line["images"] = found.get("images", pd.NA)
        line["predictions"] = found.get("predictions", pd.NA)
        line["note"] = "" if row.metrics is not None else "not evaluated"
        lines.append(line)
    columns = ["experiment", "model", "supervision", "seed", *metrics]
    frame = pd.DataFrame(lines, columns=[*columns, "images", "predictions", "note"])
    return frame.astype({"images": "Int64", "predictions": "Int64", "seed": "int64"})


def group_by_seed(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof 1; NaN with one seed) of every metric over seeds.

    Groups lines by (experiment name without ``_seed{s}``, model, supervision); only
    evaluated lines count. Columns: experiment, model, supervision, seeds (how many
    evaluated), seed_list, then ``{metric}_mean`` and ``{metric}_std`` per metric.
    """
    metrics = [c for c in summary.columns if c.startswith(("mAP", "COCO_"))]
    frame = summary.copy()
    frame["group"] = [
        seed_group(name, int(seed))
        for name, seed in zip(frame["experiment"], frame["seed"], strict=True)
    ]
    lines = []
    for (group, model, supervision), part in frame.groupby(
        ["group", "model", "supervision"], sort=False
    ):
        evaluated = part[part["note"] == ""]
        line: dict[str, Any] = {
            "experiment": group,
            "model": model,
            "supervision": supervision,
            "seeds": len(evaluated),
            "seed_list": ",".join(str(seed) for seed in evaluated["seed"]),
        }
        for metric in metrics:
            values = evaluated[metric].dropna().astype(float)
            line[f"{metric}_mean"] = values.mean() if len(values) else math.nan
            line[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        lines.append(line)
    columns = ["experiment", "model", "supervision", "seeds", "seed_list"]
    columns += [f"{metric}_{kind}" for metric in metrics for kind in ("mean", "std")]
    return pd.DataFrame(lines, columns=columns)


def mean_std_view(grouped: pd.DataFrame) -> pd.DataFrame:
    """The grouped table with one ``mean ± std`` text column per metric (for HTML)."""
    metrics = [c[: -len("_mean")] for c in grouped.columns if c.endswith("_mean")]
    view = grouped[["experiment", "model", "supervision", "seeds"]].copy()
    for metric in metrics:
        view[metric] = [
            _mean_std(mean, std)
            for mean, std in zip(grouped[f"{metric}_mean"], grouped[f"{metric}_std"], strict=True)
        ]
    return view


def _mean_std(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "NA"
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def classifier_table(metrics: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Train-split F1 per classifier variant: images, micro/macro F1, per-class F1."""
    lines = []
    for variant, found in metrics.items():
        line = {"classifier": variant, "images": found.get("images")}
        line["micro_f1"] = found.get("micro_f1")
        line["macro_f1"] = found.get("macro_f1")
        names = found.get("categories") or [
            f"class {c}" for c in range(len(found.get("per_class_f1", [])))
        ]
        line.update(dict(zip(names, found.get("per_class_f1", []), strict=False)))
        lines.append(line)
    return pd.DataFrame(lines)


def cue_table(stats: Mapping[str, Any]) -> pd.DataFrame:
    """Cue statistics (``cues/stats.json``): one line per split, cue cut and class."""
    lines = []
    for split, found in stats.get("splits", {}).items():
        for cut in ("all_cues", "above_cue_threshold"):
            for name, counts in found.get(cut, {}).items():
                line = {"split": split, "cut": cut, "class": name}
                line.update({key: counts.get(key) for key in CUE_COUNTS})
                lines.append(line)
    return pd.DataFrame(lines, columns=["split", "cut", "class", *CUE_COUNTS])


def miou_table(miou: Mapping[str, Any]) -> pd.DataFrame:
    """WSSS quality (``wsss/miou_{split}.json``, fractions) as percent, one line per class."""
    lines = [{"class": name, "IoU": 100 * _number(value)} for name, value in miou["iou"].items()]
    lines.append({"class": "mean IoU", "IoU": 100 * _number(miou.get("miou"))})
    lines.append({"class": "pixel accuracy", "IoU": 100 * _number(miou.get("pixel_accuracy"))})
    return pd.DataFrame(lines, columns=["class", "IoU"])


def key_value_table(data: Mapping[str, Any]) -> pd.DataFrame:
    """Scalar entries of a flat statistics mapping (e.g. ``pseudo/stats.json``), as text.

    Values are text so that counts stay integers next to fractions: ints as they are,
    floats to 4 significant digits, None as ``NA``.
    """
    lines = [
        {"statistic": key, "value": _text(value)}
        for key, value in data.items()
        if value is None or isinstance(value, int | float | str)
    ]
    return pd.DataFrame(lines, columns=["statistic", "value"])


def _text(value: Any) -> str:
    if value is None:
        return "NA"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def per_class_table(evaluations: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per-class metrics of every model: one line per (model, metric), one column per class."""
    lines = []
    for model, found in evaluations.items():
        for metric, values in found.get("per_class", {}).items():
            line = {"model": model, "metric": metric}
            line.update({name: _number(value) for name, value in values.items()})
            lines.append(line)
    return pd.DataFrame(lines)


def benchmark_rule(stem: str, rules: Sequence[str]) -> str:
    """The rule of a benchmark file ``{rule}_{wildcards}``: the longest matching rule name.

    Without a matching rule (``rules`` empty or unknown) the whole stem is used.
    """
    matches = [rule for rule in rules if stem == rule or stem.startswith(f"{rule}_")]
    return max(matches, key=len) if matches else stem


def runtime_by_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, total and longest wall time (s), peak RSS (MB), total CPU time (s)."""
    columns = ["rule", "jobs", "total_s", "max_s", "max_rss_mb", "cpu_s"]
    if jobs.empty:
        return pd.DataFrame(columns=columns)
    grouped = jobs.groupby("rule", sort=False)
    table = pd.DataFrame(
        {
            "jobs": grouped.size(),
            "total_s": grouped["s"].sum(),
            "max_s": grouped["s"].max(),
            "max_rss_mb": grouped["max_rss"].max(),
            "cpu_s": grouped["cpu_time"].sum(),
        }
    ).reset_index()
    return table.sort_values("total_s", ascending=False, ignore_index=True)[columns]


def write_tsv(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Tab-separated, ``NA`` for missing values, floats at 4 decimals (atomic)."""
    write_text(path, frame.to_csv(sep="\t", index=False, na_rep="NA", float_format="%.4f"))


_STYLE = (
    "body{font-family:sans-serif;font-size:13px;margin:12px}"
    "table{border-collapse:collapse;margin-bottom:18px}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#eee}td:first-child,th:first-child{text-align:left}"
    ".note{color:#805000}"
)


def write_html(
    path: str | os.PathLike[str],
    title: str,
    sections: Sequence[tuple[str, pd.DataFrame | None, str]],
) -> None:
    """A standalone HTML page: per section a heading, a table (or none) and a note."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"]
    parts.append(f"</title><style>{_STYLE}</style></head><body><h2>{html.escape(title)}</h2>")
    for heading, frame, note in sections:
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
        if frame is not None and not frame.empty:
            parts.append(frame.to_html(index=False, na_rep="NA", float_format="{:.2f}".format))
    parts.append("</body></html>\n")
    write_text(path, "".join(parts))
