"""``python -m bestie export-pseudo-gt``: the Mask R-CNN stage's pseudo ground truth.

Reads the instance network's predictions on the train split (``instance/pred_train.json``,
COCO results) and writes ``maskrcnn/pseudo_gt_train.json``, a COCO instances file holding
the predictions scored at least ``maskrcnn.pseudo_score_threshold`` (empty masks dropped;
boxes and areas from the masks). Every train image is listed, also those left without an
instance; ``train-maskrcnn`` applies ``maskrcnn.empty_policy`` to them. No ground truth is
read here.
"""

from __future__ import annotations

import argparse
import logging

from bestie.artifacts import read_json, read_records, write_json
from bestie.config import load_sections
from bestie.data.maskrcnn_dataset import predictions_to_ground_truth

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the 'maskrcnn' config section")
    parser.add_argument("--predictions", required=True, help="instance/pred_train.json")
    parser.add_argument("--records", required=True, help="records JSON of the train split")
    parser.add_argument("--out", required=True, help="output COCO instances JSON")


def run(args: argparse.Namespace) -> None:
    cfg = load_sections(args.config)
    records, categories = read_records(args.records)
    predictions = read_json(args.predictions)
    if not isinstance(predictions, list):
        raise ValueError(f"{args.predictions}: expected a COCO results list")
    coco, counts = predictions_to_ground_truth(
        predictions,
        records,
        categories,
        score_threshold=cfg.maskrcnn.pseudo_score_threshold,
    )
    write_json(args.out, coco)
    LOG.info(
        "%d of %d predictions kept as pseudo GT (%d below score %.2f, %d empty); "
        "%d of %d images without an instance -> %s",
        counts["kept"],
        counts["predictions"],
        counts["below_threshold"],
        cfg.maskrcnn.pseudo_score_threshold,
        counts["empty"],
        counts["images_without_instances"],
        len(records),
        args.out,
    )
