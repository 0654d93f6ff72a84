"""``python -m bestie inspect PATH [--json]``: summarise any artifact of the pipeline.

Records, COCO ground truth, pseudo labels (with their statistics), predictions, evaluation
and mIoU JSON, cues HDF5, WSSS map folders and PNGs, checkpoints and model files (read with
``weights_only=True``), training logs and tables. The summaries are made by
:mod:`bestie.inspection`; a file it does not recognise is an error naming it.
"""

from __future__ import annotations

import argparse
import json

from bestie.inspection import format_summary, inspect_artifact


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="+", help="artifact file(s) or WSSS map folder(s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> None:
    summaries = [inspect_artifact(path) for path in args.path]
    if args.json:
        data = summaries[0] if len(summaries) == 1 else summaries
        print(json.dumps(data, indent=1, allow_nan=True))
        return
    print("\n\n".join(format_summary(summary) for summary in summaries))
