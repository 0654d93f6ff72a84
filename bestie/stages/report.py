"""``python -m bestie report``: the Table-1 summary over every experiment (DESIGN §2, §7).

``--row EXPERIMENT MODEL SUPERVISION SEED EVAL`` (repeatable; EVAL is an
``eval/{model}_val.json`` or ``-`` when that model is not evaluated, e.g. its stage is not
in the workflow yet) ``--summary results/summary.tsv --by-seed results/summary_by_seed.tsv
--html results/report/summary.html --figure results/report/summary.png``.

- ``summary.tsv``: one line per row: experiment, model, supervision, seed, mAP25, mAP50,
  mAP70, mAP75 (VOC, percent), COCO_AP, COCO_AP50, COCO_AP75, images, predictions, note
  (``not evaluated`` or empty).
- ``summary_by_seed.tsv``: experiments named ``{name}_seed{s}`` grouped by name: seeds
  (evaluated), seed_list, ``{metric}_mean`` and ``{metric}_std`` (sample std, NA with one).
- ``summary.html`` both tables (mean ± std as text) and ``summary.png`` grouped mAP bars.
"""

from __future__ import annotations

import argparse
import logging

from bestie.artifacts import read_json
from bestie.report.figures import plot_summary
from bestie.report.tables import (
    SummaryRow,
    group_by_seed,
    mean_std_view,
    summary_table,
    write_html,
    write_tsv,
)

_LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--row",
        nargs=5,
        action="append",
        default=[],
        metavar=("EXPERIMENT", "MODEL", "SUPERVISION", "SEED", "EVAL"),
        help="one summary line; EVAL is the eval JSON or '-' (repeatable)",
    )
    parser.add_argument("--summary", required=True, help="results/summary.tsv")
    parser.add_argument("--by-seed", required=True, help="results/summary_by_seed.tsv")
    parser.add_argument("--html", required=True, help="both tables as an HTML page")
    parser.add_argument("--figure", required=True, help="grouped mAP bar chart (PNG)")


def read_rows(arguments: list[list[str]]) -> list[SummaryRow]:
    """Parse ``--row`` values, reading each evaluation file that is given."""
    rows = []
    for experiment, model, supervision, seed, path in arguments:
        if not seed.lstrip("-").isdigit():
            raise ValueError(f"--row {experiment} {model}: seed {seed!r} is not an integer")
        metrics = None if path == "-" else read_json(path)
        rows.append(SummaryRow(experiment, model, supervision, int(seed), metrics))
    return rows


def run(args: argparse.Namespace) -> None:
    """Write the summary, its per-seed grouping, their HTML page and the bar chart."""
    rows = read_rows(args.row)
    summary = summary_table(rows)
    grouped = group_by_seed(summary)
    write_tsv(args.summary, summary)
    write_tsv(args.by_seed, grouped)
    missing = [f"{row.experiment}/{row.model}" for row in rows if row.metrics is None]
    note = (
        f"Not evaluated (their stages are not in the workflow yet): {', '.join(missing)}."
        if missing
        else ""
    )
    write_html(
        args.html,
        "Summary: val instance segmentation",
        [
            ("Table 1: one line per experiment and model (percent)", summary, note),
            ("Mean ± std over seeds", mean_std_view(grouped), ""),
        ],
    )
    plot_summary(grouped, args.figure)
    _LOG.info("%d summary lines (%d not evaluated) -> %s", len(rows), len(missing), args.summary)
