"""``python -m bestie train-instance``: train the instance network (SPEC §3-5).

Reads the train records, the stored pseudo instances (``pseudo/train.json``) and the WSSS
maps; writes ``instance/model.pt`` (the final weights), ``instance/train_log.csv`` and
``instance/checkpoints/last.pt``. A rerun resumes from the checkpoint. Under ``torchrun``
it trains data-parallel over the job's GPUs (gloo on CPU). Ground truth, when given, is
read only for the true-positive audit columns of the log (the paper's Fig. 6) and, with
``instance.holdout`` (opt-in, :mod:`bestie.selection`), to score the snapshots on the
held-out train images: the best becomes model.pt, its metadata holds every score.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from bestie.artifacts import annotations_by_image, read_json, read_records
from bestie.config import Config, load_sections
from bestie.data.instance_dataset import InstanceDataset
from bestie.data.io import label_map_loader, label_map_path, read_image
from bestie.data.transforms import TrainAugmentation
from bestie.engine.audit import AuditImage, TruePositiveAudit
from bestie.engine.checkpoint import inputs_key, save_model
from bestie.engine.distributed import Process, cleanup, init_process
from bestie.engine.instance_trainer import train_instance
from bestie.evaluation.iou import count_true_positives
from bestie.models.instance_net import build_instance_net
from bestie.selection import SELECTION_METRIC, holdout_ids, score_model, select_best, subset_gt
from bestie.stages.predict_instance import load_instance_net
from bestie.structures import ImageRecord, Instances

LOG = logging.getLogger(__name__)
AUDIT_IMAGES = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the stage's config sections")
    parser.add_argument("--records", required=True, help="records JSON of the train split")
    parser.add_argument("--pseudo", required=True, help="pseudo/train.json")
    parser.add_argument("--wsss", required=True, help="folder of the train WSSS maps")
    parser.add_argument(
        "--gt", default="", help="train ground truth (audit statistics, instance.holdout)"
    )
    parser.add_argument("--out", required=True, help="output model.pt")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def read_gt(path: str) -> dict | None:
    """The train ground truth, or None where the data set has none."""
    return read_json(path) if path and os.path.isfile(path) else None


def build_audit(
    cfg: Config, records, pseudo, load_map, num_classes: int, gt_json: dict | None, process: Process
) -> TruePositiveAudit | None:
    """The Fig. 6 audit over the first train images with ground truth (None without GT)."""
    if gt_json is None:
        return None
    gt = annotations_by_image(gt_json["annotations"], gt_json["images"])
    chosen = [r for r in records if r.id in gt and r.classes][:AUDIT_IMAGES]
    if not chosen:
        return None
    images, pseudo_tp = [], 0
    for record in chosen:
        mine: Instances = pseudo[record.id]
        truth = gt[record.id]
        pseudo_tp += count_true_positives(mine.masks, mine.labels, truth.masks, truth.labels)
        images.append(
            AuditImage(
                read_image(record.file), load_map(record), record.label_vector(num_classes), truth
            )
        )
    return TruePositiveAudit(images, pseudo_tp, cfg.refine, cfg.pseudo.sigma, process.device)


def select_on_holdout(
    cfg: Config,
    final: torch.nn.Module,
    snapshots: Path,
    records: list[ImageRecord],
    gt_json: dict,
    num_classes: int,
    device: torch.device,
) -> tuple[torch.nn.Module, dict]:
    """The snapshot (or final weights) with the best mAP50 on the held-out ``records``.

    Returns:
        ``(model, selection)``; selection holds the metric, the held-out image ids, one
        score entry per candidate and the selected iteration (model metadata, plain types).
    """
    ids = {record.id for record in records}
    gt = subset_gt(gt_json, ids)
    images = {record.id: read_image(record.file) for record in records}
    last = cfg.instance.iterations
    candidates = {int(path.stem.split("_")[1]): path for path in snapshots.glob("iter_*.pt")}
    candidates.pop(last, None)  # the final weights are scored from memory

    def score(model: torch.nn.Module, iteration: int) -> dict:
        entry = score_model(model, records, images, gt, cfg.decode, [0.5], num_classes, device)
        LOG.info("held-out %s at iteration %d: %s", SELECTION_METRIC, iteration, entry)
        return {"iteration": iteration, **entry}

    scores = [score(load_instance_net(str(candidates[i]), device), i) for i in sorted(candidates)]
    final.eval()
    scores.append(score(final, last))
    best = scores[select_best(scores)]["iteration"]
    model = final if best == last else load_instance_net(str(candidates[best]), device)
    LOG.info("selected iteration %d of %d on %d held-out images", best, last, len(records))
    selection = {
        "metric": SELECTION_METRIC,
        "holdout_images": sorted(ids),
        "scores": scores,
        "selected_iteration": best,
    }
    return model, selection


def run(args: argparse.Namespace) -> None:
    cfg = load_sections(args.config)
    process = init_process(args.device)
    try:
        records, categories = read_records(args.records)
        # a rerun after the images, their WSSS maps or the pseudo labels changed must not
        # resume the old run (images and maps by path and size: too many to read each start)
        key = inputs_key(
            args.config,
            [args.records, args.pseudo],
            [r.file for r in records] + [label_map_path(args.wsss, r.name) for r in records],
        )
        pseudo_json = read_json(args.pseudo)
        pseudo = annotations_by_image(pseudo_json["annotations"], records)
        gt_json = read_gt(args.gt)
        gt_ids = [image["id"] for image in gt_json["images"]] if gt_json else []
        held = holdout_ids(records, gt_ids, cfg.instance.holdout)
        held_records = [record for record in records if record.id in held]
        records = [record for record in records if record.id not in held]
        if held:
            LOG.info("holding out %d train images for selection", len(held))
        load_map = label_map_loader(args.wsss)
        augmentation = TrainAugmentation(
            cfg.instance.crop, cfg.instance.scale_min, cfg.instance.scale_max
        )
        dataset = InstanceDataset(
            records,
            pseudo,
            load_map,
            len(categories),
            augmentation,
            sigma=cfg.pseudo.sigma,
            supervision=cfg.supervision,
            seed=cfg.seed,
        )
        # The random initialisation (heads, or all of a backbone without weights) must come
        # from the seed: a rerun, or a resumed run's first attempt, must start from it too.
        torch.manual_seed(cfg.seed)
        model = build_instance_net(
            cfg.instance.backbone,
            len(categories),
            weights=cfg.instance.weights,
            bn_momentum=cfg.instance.bn_momentum,
        )
        audit = None
        if process.is_main:
            audit = build_audit(cfg, records, pseudo, load_map, len(categories), gt_json, process)
        output = Path(args.out).parent
        metadata = {
            "backbone": cfg.instance.backbone,
            "num_classes": len(categories),
            "categories": categories,
            "iterations": cfg.instance.iterations,
        }
        (output / "snapshots").mkdir(parents=True, exist_ok=True)
        model = train_instance(
            cfg,
            model,
            dataset,
            output,
            process,
            key=key,
            audit=audit,
            snapshot_metadata=metadata,
        )
        if process.is_main:
            if held:
                model, metadata["selection"] = select_on_holdout(
                    cfg,
                    model,
                    output / "snapshots",
                    held_records,
                    gt_json,
                    len(categories),
                    process.device,
                )
            save_model(args.out, model, metadata)
            LOG.info("saved %s", args.out)
    finally:
        cleanup(process)
