"""``python -m bestie train-classifier``: train the CAM or PAM classifier (SPEC §1.1-1.2).

Writes into ``--output-dir`` (``results/{exp}/classifier/{cam,pam}/``):

- ``model.pt``: the trained weights and the architecture (engine.checkpoint.save_model;
  metadata: num_classes, width, pam_layers, pam_alpha, categories, crop, epochs);
- ``train_log.csv``: one row per epoch (epoch, lr, loss, train micro/macro F1, seconds);
- ``metrics.json``: multi-label F1 on the un-augmented train split (threshold 0.5);
- ``checkpoints/last.pt``: resumable state (not a rule output, so it survives a rerun); it
  is resumed only by a run of the same config, records, ``--init`` model and image sizes.

Whether it is the CAM or the PAM classifier is decided by ``classifier.pam_layers`` alone
(the workflow forces ``[]`` for CAM). With ``classifier.pam_init: cam`` the PAM classifier
starts from ``--init``, the trained CAM classifier's ``model.pt`` (PAM has no parameters, so
every weight carries over), and the workflow hands it ``pam_epochs``/``pam_lr`` as its
``epochs``/``lr``.

Started by ``torchrun --nproc-per-node N`` it trains data-parallel (DDP; the total
``classifier.batch_size`` is split over the N processes); the main process alone evaluates
the train split and writes the files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from bestie.artifacts import read_records, write_json
from bestie.config import load_sections
from bestie.data.classification import ClassificationDataset, EvalTransform, TrainTransform
from bestie.engine.checkpoint import inputs_key, load_model, save_model
from bestie.engine.classifier_trainer import evaluate_classifier, train_classifier
from bestie.engine.distributed import Process, cleanup, init_process
from bestie.models.classifier import build_classifier, classifier_metadata
from bestie.structures import ImageRecord

_LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="stage config sections as JSON")
    parser.add_argument("--records", required=True, help="dataset/train.json")
    parser.add_argument("--output-dir", required=True, help="classifier/{cam,pam}/")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--init", default="", help="classifier/cam/model.pt to start from (pam_init: cam)"
    )


def run(args: argparse.Namespace) -> None:
    config = load_sections(args.config)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    records, categories = read_records(args.records)
    output = Path(args.output_dir)
    process = init_process(args.device)
    try:
        _train(config, records, categories, output, process, args.init, args.records)
    finally:
        cleanup(process)


def _train(
    config,
    records: list[ImageRecord],
    categories: list[str],
    output: Path,
    process: Process,
    init: str,
    records_path: str,
) -> None:
    cfg = config.classifier
    torch.manual_seed(config.seed)  # the random init of every process is the same
    model = build_classifier(cfg, len(categories))
    fine_tune = cfg.pam_init == "cam" and bool(cfg.pam_layers)
    if fine_tune:
        if not init:
            raise ValueError("classifier.pam_init is 'cam' but no --init model was given")
        state, _ = load_model(init)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            message = f"{init}: not a CAM classifier of this architecture: {error}"
            raise ValueError(message) from None
        _LOG.info("fine-tuning from the CAM classifier %s", init)
    _LOG.info(
        "classifier: %d images, %d classes, width %g, PAM layers %s, %d process(es) on %s",
        len(records),
        len(categories),
        cfg.width,
        cfg.pam_layers or "none (CAM)",
        process.world_size,
        process.device,
    )
    transform = TrainTransform(cfg.resize, cfg.crop, cfg.color_jitter)
    train_set = ClassificationDataset(records, len(categories), transform)
    train_classifier(
        model,
        train_set,
        cfg,
        seed=config.seed,
        process=process,
        work_dir=output,
        log_path=output / "train_log.csv",
        # a rerun after the data or the CAM classifier changed must not resume the old run
        inputs=inputs_key(
            "", [records_path, *([init] if fine_tune else [])], [r.file for r in records]
        ),
    )
    if not process.is_main:
        return
    # ``model`` is the bare classifier that the DDP wrapper (if any) trained in place
    eval_set = ClassificationDataset(records, len(categories), EvalTransform(cfg.crop))
    metrics = evaluate_classifier(
        model, eval_set, device=process.device, batch_size=cfg.batch_size, workers=cfg.workers
    )
    metrics["categories"] = categories
    _LOG.info("train split: micro-F1 %.3f macro-F1 %.3f", metrics["micro_f1"], metrics["macro_f1"])
    write_json(output / "metrics.json", metrics, indent=1)
    metadata = {
        **classifier_metadata(model),
        "categories": categories,
        "crop": cfg.crop,
        "epochs": cfg.epochs,
    }
    save_model(output / "model.pt", model, metadata)
