"""Command line: ``python -m bestie <command> [options]``, one subcommand per pipeline rule.

Each command lives in a module of ``bestie.stages`` exposing ``add_arguments(parser)`` and
``run(args) -> None``; modules are imported only when their command runs, so ``--help``
stays fast. Rule names are these commands with ``_`` in place of ``-``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import stat
import sys

# command -> (module under bestie.stages, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-dataset": ("prepare_dataset", "write the records and GT of one split"),
    "make-wsss": ("make_wsss", "write the WSSS label maps of one shard of a split"),
    "gather-wsss": ("gather_wsss", "merge WSSS map shards and write their mIoU"),
    "train-segnet": ("train_segnet", "retrain a segmentation net on the raw CAM masks"),
    "synthesize-pseudo-labels": (
        "synthesize_pseudo_labels",
        "pseudo instances of one shard by semantic knowledge transfer",
    ),
    "gather-pseudo-labels": ("gather_pseudo_labels", "merge pseudo-label shards and statistics"),
    "train-classifier": ("train_classifier", "train the CAM or PAM classifier"),
    "extract-cues": ("extract_cues", "write the instance cues of one shard of a split"),
    "gather-cues": ("gather_cues", "merge instance-cue shard files into one"),
    "cue-stats": ("cue_stats", "score the instance cues against the ground truth"),
    "train-instance": ("train_instance", "train the instance network (IAG + self-refinement)"),
    "predict-instance": ("predict_instance", "instance predictions of one shard of a split"),
    "gather-predictions": ("gather_predictions", "concatenate prediction shards"),
    "evaluate-curve": ("evaluate_curve", "VOC mAP of every training snapshot (Fig. 7)"),
    "evaluate": ("evaluate", "score predictions: VOC mAP25/50/70/75 and COCO AP"),
    "export-pseudo-gt": (
        "export_pseudo_gt",
        "the instance network's train predictions as Mask R-CNN pseudo GT",
    ),
    "train-maskrcnn": ("train_maskrcnn", "train Mask R-CNN on the pseudo GT (or GT: oracle)"),
    "predict-maskrcnn": ("predict_maskrcnn", "Mask R-CNN predictions of one shard of a split"),
    "gather-maskrcnn-predictions": ("gather_predictions", "concatenate Mask R-CNN shards"),
    "report-experiment": (
        "report_experiment",
        "figures and tables of one experiment for the report",
    ),
    "report": ("report", "the summary tables (Table 1, mean ± std over seeds) of all experiments"),
    "inspect": ("inspect", "summarise any artifact: counts, classes, score ranges, progress"),
    "show": ("show", "draw a per-image artifact over its image"),
    "schema": ("schema", "print the config JSON schema generated from the dataclasses"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bestie",
        description="BESTIE weakly-supervised instance segmentation: pipeline stages.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, (module, help_text) in COMMANDS.items():
        # No -h here: `python -m bestie COMMAND --help` reaches the stage's own parser.
        sub = commands.add_parser(command, help=help_text, add_help=False)
        sub.set_defaults(module=module)
        sub.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        # Options are added lazily in main(): importing every stage (and torch) for --help
        # would take seconds.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    module = importlib.import_module(f"bestie.stages.{known.module}")
    stage_parser = argparse.ArgumentParser(
        prog=f"python -m bestie {known.command}", description=COMMANDS[known.command][1]
    )
    stage_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(stage_parser)
    args = stage_parser.parse_args(argv[argv.index(known.command) + 1 :])
    logging.basicConfig(
        level=logging.DEBUG if (args.verbose or known.verbose) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        module.run(args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        logging.getLogger("bestie").error("%s", error)
        return 1
    except BrokenPipeError:
        if not _stdout_is_pipe():
            raise
        # `python -m bestie inspect ... | head`: stop quietly, as cat does; what is left in
        # the buffer goes to /dev/null, or Python's own flush at exit would fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def _stdout_is_pipe() -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError):  # no real file behind sys.stdout (a test's capture)
        return False
