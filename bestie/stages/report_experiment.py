"""``python -m bestie report-experiment``: the figures and tables of one experiment (DESIGN §7).

Reads only the artifacts named on the command line; every artifact option is optional, and
a figure whose artifacts are not given is written as a placeholder PNG that says so (an
experiment that does not run the stage: the oracle trains no classifier or instance network,
``instance.snapshot_every: 0`` gives no mAP curve). ``--benchmarks DIR`` is read as it is
when the job runs (every upstream job has finished by then). Writes into ``--output-dir``:

- ``classifier_training.png``: CAM/PAM loss and train F1 per epoch (``train_log.csv``).
- ``cam_vs_pam.png``: paper Fig. 3, CAM and PAM label-class maps with their peaks for
  ``report.qualitative_images`` train images (from the two ``model.pt``).
- ``instance_training.png``: instance-network loss terms, lr and refined-label counts.
- ``true_positives.png``: paper Fig. 6, true positives of pseudo vs refined labels.
- ``map_curve.png``: paper Fig. 7, val mAP over training (``eval/instance_curve_val.json``).
- ``qualitative.png``: ``report.qualitative_images`` val images: GT and each model's masks.
- ``runtime.png``, ``runtime.tsv``: per job wall time and memory (Snakemake benchmarks).
- ``tables.html``: classifier F1, cue statistics, WSSS mIoU, pseudo-label statistics,
  per-class AP and runtime per rule.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from bestie.artifacts import annotations_by_image, read_json, read_records
from bestie.config import load_sections
from bestie.data.io import read_image
from bestie.report import figures, tables
from bestie.report.panels import PanelImage, cam_pam_rows, prediction_row

_LOG = logging.getLogger(__name__)
MODELS = ("instance", "maskrcnn")
VARIANTS = ("cam", "pam")
NOT_BUILT = "not produced: its stage does not run in this experiment"
OUTPUTS = (
    "classifier_training.png",
    "cam_vs_pam.png",
    "instance_training.png",
    "true_positives.png",
    "map_curve.png",
    "qualitative.png",
    "runtime.png",
    "runtime.tsv",
    "tables.html",
)
# Optional artifact options: (option, help).
ARTIFACTS = [
    *[(f"--classifier-log-{v}", f"classifier/{v}/train_log.csv") for v in VARIANTS],
    *[(f"--classifier-metrics-{v}", f"classifier/{v}/metrics.json") for v in VARIANTS],
    *[(f"--classifier-model-{v}", f"classifier/{v}/model.pt") for v in VARIANTS],
    ("--train-records", "dataset/train.json (CAM vs PAM images)"),
    ("--cue-stats", "cues/stats.json"),
    ("--wsss-miou", "wsss/miou_train.json"),
    ("--pseudo-stats", "pseudo/stats.json"),
    ("--instance-log", "instance/train_log.csv"),
    ("--map-curve", "eval/instance_curve_val.json"),
    *[(f"--eval-{m}", f"eval/{m}_val.json") for m in MODELS],
    *[(f"--predictions-{m}", f"{m}/pred_val.json") for m in MODELS],
    ("--val-records", "dataset/val.json (qualitative images)"),
    ("--val-gt", "dataset/val_gt.json (qualitative images)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="experiment name (titles)")
    parser.add_argument("--config", required=True, help="JSON of the cues and report sections")
    parser.add_argument("--output-dir", required=True, help="results/report/{exp}")
    parser.add_argument("--benchmarks", default="", help="results/{exp}/benchmarks folder")
    parser.add_argument("--rules", nargs="*", default=[], help="rule names (benchmark files)")
    for option, help_text in ARTIFACTS:
        parser.add_argument(option, default="", help=help_text)


def classifier_figure(args: argparse.Namespace, output: Path) -> None:
    """``classifier_training.png`` from the CAM/PAM logs that are given."""
    logs = {v: getattr(args, f"classifier_log_{v}") for v in VARIANTS}
    logs = {v: pd.read_csv(path) for v, path in logs.items() if path}
    if logs:
        figures.plot_classifier_training(logs, str(output / "classifier_training.png"))
    else:
        figures.placeholder(output / "classifier_training.png", "Classifier training", NOT_BUILT)


def _first_images(records, count: int, keep) -> list[PanelImage]:
    """The first ``count`` records (records order) for which ``keep(record)`` holds."""
    chosen = [record for record in records if keep(record)][:count]
    return [PanelImage(r.name, read_image(r.file), tuple(r.classes)) for r in chosen]


def cam_pam_figure(args: argparse.Namespace, config, output: Path) -> None:
    """``cam_vs_pam.png``: the given classifiers' maps on the first labelled train images."""
    from bestie.models.classifier import load_classifier

    path = output / "cam_vs_pam.png"
    paths = {v: getattr(args, f"classifier_model_{v}") for v in VARIANTS}
    paths = {v: p for v, p in paths.items() if p}
    if not paths or not args.train_records:
        figures.placeholder(path, "Fig. 3: CAM vs PAM", NOT_BUILT)
        return
    records, categories = read_records(args.train_records)
    images = _first_images(records, config.report.qualitative_images, lambda r: r.classes)
    if not images:
        figures.placeholder(path, "Fig. 3: CAM vs PAM", "no train image has a class label")
        return
    # Each classifier as cue extraction runs it (cues.pam_alpha: PAM at extraction or not).
    models = {
        variant: load_classifier(p, pam_alpha=config.cues.pam_alpha)[0]
        for variant, p in paths.items()
    }
    panels, titles = cam_pam_rows(images, models, config.cues, categories)
    figures.save_grid(path, panels, titles)


def instance_figures(args: argparse.Namespace, output: Path) -> None:
    """Instance-training curves, Fig. 6 (from the training log) and Fig. 7 (the curve)."""
    if args.instance_log:
        log = pd.read_csv(args.instance_log)
        figures.plot_instance_training(log, str(output / "instance_training.png"))
        figures.plot_true_positives(log, str(output / "true_positives.png"))
    else:
        figures.placeholder(output / "instance_training.png", "Instance training", NOT_BUILT)
        figures.placeholder(output / "true_positives.png", "Fig. 6: true positives", NOT_BUILT)
    if args.map_curve:
        figures.plot_map_curve(read_json(args.map_curve), str(output / "map_curve.png"))
    else:
        figures.placeholder(output / "map_curve.png", "Fig. 7: mAP over training", NOT_BUILT)


def qualitative_figure(args: argparse.Namespace, config, output: Path) -> None:
    """``qualitative.png``: GT and predictions on the first val images with GT instances."""
    path = output / "qualitative.png"
    predictions = {m: getattr(args, f"predictions_{m}") for m in MODELS}
    predictions = {m: p for m, p in predictions.items() if p}
    if not predictions or not args.val_records or not args.val_gt:
        figures.placeholder(path, "Predictions vs GT", NOT_BUILT)
        return
    records, _ = read_records(args.val_records)
    gt = read_json(args.val_gt)
    with_gt = {int(a["image_id"]) for a in gt["annotations"]}
    count = config.report.qualitative_images
    images = _first_images(records, count, lambda r: r.id in with_gt)
    ids = [r.id for r in records if r.id in with_gt][:count]
    if not images:
        figures.placeholder(path, "Predictions vs GT", "no val image has GT instances")
        return
    sizes = [entry for entry in gt["images"] if int(entry["id"]) in ids]
    truth = annotations_by_image([a for a in gt["annotations"] if a["image_id"] in ids], sizes)
    found = {
        model: annotations_by_image(
            [p for p in read_json(file) if int(p["image_id"]) in ids], sizes
        )
        for model, file in predictions.items()
    }
    rows = [
        prediction_row(image, truth[image_id], {m: found[m][image_id] for m in found})
        for image, image_id in zip(images, ids, strict=True)
    ]
    figures.save_grid(path, [r[0] for r in rows], [r[1] for r in rows])


MEMORY = ["max_rss", "max_vms", "max_uss", "max_pss"]


def read_benchmarks(folder: str, rules: list[str]) -> pd.DataFrame:
    """One line per benchmark file (repeats averaged): job, rule, s, max_rss, cpu_time, ...

    A job that ended before Snakemake's first sample (CPU time 0) has no memory figures (NA):
    its file holds the shell's few MB, not the job's.
    """
    lines = []
    for path in sorted(Path(folder).glob("*.tsv")) if folder else []:
        frame = pd.read_csv(path, sep="\t")
        if frame.empty:
            continue
        line = frame.drop(columns=["h:m:s"], errors="ignore").mean(numeric_only=True).to_dict()
        if line.get("cpu_time", 1.0) <= 0:
            line.update(dict.fromkeys(MEMORY, float("nan")))
        rule = tables.benchmark_rule(path.stem, rules)
        if not rule.startswith("report"):  # the report's own jobs are still running
            lines.append({"job": path.stem, "rule": rule, **line})
    columns = ["job", "rule", "s", *MEMORY, "cpu_time"]
    frame = pd.DataFrame(lines)
    return frame.reindex(columns=[*columns, *(c for c in frame.columns if c not in columns)])


def _section(title: str, frame: pd.DataFrame | None) -> tuple[str, pd.DataFrame | None, str]:
    """An HTML page section; a missing table gets the not-built note."""
    return title, frame, "" if frame is not None else NOT_BUILT


def _read_table(path: str, build) -> pd.DataFrame | None:
    """``build(json)`` of an optional JSON artifact, None when it is not given."""
    return build(read_json(path)) if path else None


def tables_page(args: argparse.Namespace, runtime: pd.DataFrame, output: Path) -> None:
    """``tables.html``: every statistics table of the experiment, or a note per missing one."""
    metrics = {v: getattr(args, f"classifier_metrics_{v}") for v in VARIANTS}
    metrics = {v: read_json(p) for v, p in metrics.items() if p}
    evaluations = {m: getattr(args, f"eval_{m}") for m in MODELS}
    evaluations = {m: read_json(p) for m, p in evaluations.items() if p}
    sections = [
        _section(
            "Classifiers: train-split F1", tables.classifier_table(metrics) if metrics else None
        ),
        _section("Instance cues vs GT", _read_table(args.cue_stats, tables.cue_table)),
        _section("WSSS maps: IoU on train (%)", _read_table(args.wsss_miou, tables.miou_table)),
        _section("Pseudo labels", _read_table(args.pseudo_stats, tables.key_value_table)),
        _section(
            "Val per-class metrics (%)",
            tables.per_class_table(evaluations) if evaluations else None,
        ),
        _section(
            "Runtime and memory per rule (NA: every job ended before the first memory sample)",
            tables.runtime_by_rule(runtime),
        ),
    ]
    tables.write_html(output / "tables.html", f"Experiment {args.experiment}", sections)


def run(args: argparse.Namespace) -> None:
    """Write every output of the module docstring into ``--output-dir``."""
    config = load_sections(args.config)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    classifier_figure(args, output)
    cam_pam_figure(args, config, output)
    instance_figures(args, output)
    qualitative_figure(args, config, output)
    runtime = read_benchmarks(args.benchmarks, args.rules)
    tables.write_tsv(output / "runtime.tsv", runtime)
    figures.plot_runtime(tables.runtime_by_rule(runtime), str(output / "runtime.png"))
    tables_page(args, runtime, output)
    _LOG.info("experiment %s: report figures and tables -> %s", args.experiment, output)
