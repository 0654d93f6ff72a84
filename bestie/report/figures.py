"""Report figures (matplotlib, Agg backend): training curves, paper Figs. 6 and 7, runtime.

Each ``plot_*`` function draws one PNG from parsed artifacts and writes it atomically. When
its data is missing, :func:`placeholder` writes a PNG that says why instead, so the rule's
outputs always exist and the report shows the note in place of the figure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bestie.artifacts import atomic_path  # noqa: E402

# Loss and schedule columns of instance/train_log.csv, in the order they are drawn.
INSTANCE_CURVES = (
    "total",
    "seg",
    "center_pseudo",
    "offset_pseudo",
    "center_refined",
    "offset_refined",
    "refined_instances",
    "lr",
)
DPI = 100


def save_figure(figure: plt.Figure, path: str | os.PathLike[str]) -> None:
    """Write ``figure`` as PNG (atomically) and close it."""
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")
    plt.close(figure)


def placeholder(path: str | os.PathLike[str], title: str, note: str) -> None:
    """A small PNG holding a title and the reason the figure is not drawn."""
    figure = plt.figure(figsize=(6.0, 1.8))
    figure.text(0.5, 0.68, title, ha="center", va="center", fontsize=12, weight="bold")
    figure.text(0.5, 0.35, note, ha="center", va="center", fontsize=9, wrap=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")
    plt.close(figure)


def plot_classifier_training(logs: Mapping[str, pd.DataFrame], path: str) -> None:
    """Loss and train F1 per epoch of each classifier (``classifier/{cam,pam}/train_log.csv``).

    Args:
        logs: variant name (``cam``, ``pam``) -> its log (epoch, loss, train_micro_f1, ...).
        path: output PNG.
    """
    figure, (loss_axis, f1_axis) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    for variant, log in logs.items():
        loss_axis.plot(log["epoch"], log["loss"], marker=".", label=variant.upper())
        for column, style in (("train_micro_f1", "-"), ("train_macro_f1", "--")):
            if column in log:
                label = f"{variant.upper()} {column.split('_')[1]}"
                f1_axis.plot(log["epoch"], log[column], style, marker=".", label=label)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="classifier loss", yscale="log")
    f1_axis.set(xlabel="epoch", ylabel="F1", title="train F1 (augmented batches)", ylim=(0, 1.02))
    for axis in (loss_axis, f1_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    save_figure(figure, path)


def plot_instance_training(log: pd.DataFrame, path: str) -> None:
    """One small panel per loss term (and lr, refined-instance count) over iterations."""
    columns = [c for c in INSTANCE_CURVES if c in log and log[c].notna().any()]
    if not columns:
        placeholder(path, "Instance network training", "the log has no loss columns")
        return
    cols = 4
    rows = -(-len(columns) // cols)
    figure, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.5 * rows), squeeze=False)
    for axis, column in zip(axes.flat, columns, strict=False):
        axis.plot(log["iteration"], log[column], linewidth=1.0)
        axis.set_title(column, fontsize=9)
        axis.set_xlabel("iteration", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(columns) :]:
        axis.axis("off")
    save_figure(figure, path)


def plot_true_positives(log: pd.DataFrame, path: str) -> None:
    """Paper Fig. 6: true positives of the pseudo and the refined labels over iterations.

    ``pseudo_tp`` and ``refined_tp`` (per logged batch, IoU >= 0.5 with the GT) come from
    ``instance/train_log.csv``; both are NaN when the data set has no GT.
    """
    known = [c for c in ("pseudo_tp", "refined_tp") if c in log and log[c].notna().any()]
    if not known:
        placeholder(path, "Fig. 6: label true positives", "no true-positive counts (no GT)")
        return
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    labels = {"pseudo_tp": "pseudo labels", "refined_tp": "self-refined labels"}
    for column in known:
        series = log[column].astype(float)
        line = axis.plot(log["iteration"], series, alpha=0.35, linewidth=0.8)[0]
        window = max(1, len(series) // 20)
        smooth = series.rolling(window, min_periods=1).mean()
        axis.plot(log["iteration"], smooth, color=line.get_color(), label=labels[column])
    axis.set(xlabel="iteration", ylabel="true positives per batch")
    axis.set_title("Fig. 6: true positives of pseudo vs refined labels", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def plot_map_curve(curve: Sequence[Mapping[str, float]], path: str) -> None:
    """Paper Fig. 7: val mAP over training iterations (``eval/instance_curve_val.json``)."""
    points = sorted(curve, key=lambda point: point["iteration"])
    keys = sorted(
        {k for p in points for k in p if k.startswith("mAP")}, key=lambda k: int(k[3:] or 0)
    )
    if not points or not keys:
        placeholder(path, "Fig. 7: mAP over training", "the curve file holds no points")
        return
    figure, axis = plt.subplots(figsize=(6.4, 3.6))
    iterations = [point["iteration"] for point in points]
    for key in keys:
        values = [np.nan if point.get(key) is None else point[key] for point in points]
        axis.plot(iterations, values, marker="o", label=key, linewidth=2 if key == "mAP50" else 1)
    axis.set(xlabel="iteration", ylabel="mAP (%)", ylim=(0, None))
    axis.set_title("Fig. 7: val mAP over training", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def plot_runtime(by_rule: pd.DataFrame, path: str) -> None:
    """Horizontal bars per rule: total wall time (s) and peak resident memory (MB)."""
    if by_rule.empty:
        placeholder(path, "Runtime and memory", "no benchmark files")
        return
    order = by_rule.iloc[::-1]
    height = 1.2 + 0.28 * len(order)
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(10.0, height), sharey=True)
    time_axis.barh(order["rule"], order["total_s"], color="#4c72b0")
    time_axis.set(xlabel="wall time, all jobs (s)", title="runtime per rule")
    memory_axis.barh(order["rule"], order["max_rss_mb"], color="#dd8452")
    memory_axis.set(xlabel="peak RSS of one job (MB)", title="memory per rule")
    for axis in (time_axis, memory_axis):
        axis.grid(axis="x", alpha=0.3)
        axis.tick_params(labelsize=8)
    save_figure(figure, path)


def plot_summary(summary: pd.DataFrame, path: str) -> None:
    """Grouped bars of every VOC mAP per (experiment, model), with std error bars.

    Args:
        summary: :func:`bestie.report.tables.group_by_seed`'s table.
        path: output PNG.
    """
    metrics = [c[: -len("_mean")] for c in summary.columns if re.fullmatch(r"mAP\d+_mean", c)]
    evaluated = summary[summary["seeds"] > 0]
    if evaluated.empty or not metrics:
        placeholder(path, "Summary (Table 1)", "no experiment has been evaluated yet")
        return
    labels = [f"{e}\n{m}" for e, m in zip(evaluated["experiment"], evaluated["model"], strict=True)]
    positions = np.arange(len(evaluated))
    width = 0.8 / len(metrics)
    figure, axis = plt.subplots(figsize=(max(5.0, 1.4 * len(evaluated) + 2), 3.8))
    for index, metric in enumerate(metrics):
        errors = evaluated[f"{metric}_std"].fillna(0).to_numpy(float)
        axis.bar(
            positions + (index - (len(metrics) - 1) / 2) * width,
            evaluated[f"{metric}_mean"].fillna(0).to_numpy(float),
            width,
            yerr=errors,
            capsize=2,
            label=metric,
        )
    axis.set_xticks(positions, labels, fontsize=8)
    means = evaluated[[f"{m}_mean" for m in metrics]].fillna(0).to_numpy(float)
    stds = evaluated[[f"{m}_std" for m in metrics]].fillna(0).to_numpy(float)
    top = max(float((means + stds).max()), 1.0) * 1.3  # headroom for the legend
    axis.set(ylabel="mAP (%)", title="val instance mAP (mean ± std over seeds)", ylim=(0, top))
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, ncols=len(metrics), loc="upper center")
    save_figure(figure, path)


def save_grid(
    path: str | os.PathLike[str],
    panels: Sequence[Sequence[np.ndarray]],
    titles: Sequence[Sequence[str]],
    *,
    row_labels: Sequence[str] | None = None,
) -> None:
    """RGB panels in a grid (one list per row, equal lengths) with titles, as one PNG."""
    rows, cols = len(panels), max(len(row) for row in panels)
    figure, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for r, (row, row_titles) in enumerate(zip(panels, titles, strict=True)):
        for c in range(cols):
            axis = axes[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c >= len(row):
                axis.axis("off")
                continue
            axis.imshow(row[c], interpolation="nearest")
            axis.set_title(row_titles[c], fontsize=8)
        if row_labels:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    save_figure(figure, path)
