"""Training logs: a CSV table of per-epoch (or per-step) rows, and a progress bar with ETA.

:class:`CsvLog` keeps its rows in memory and rewrites the CSV file atomically on every
:meth:`CsvLog.append`, so the file is always complete and parseable, even when a job is
killed. The rows are also meant to go into the checkpoint (``extra={"log": log.rows}``):
Snakemake deletes a rule's outputs before rerunning it, so after a resume the log is rebuilt
from the checkpoint's rows (:meth:`CsvLog.restore`) rather than from the old file.

:func:`progress` is tqdm with settings that suit both a terminal and a Snakemake log file
(in a file, an update at most every 30 s instead of a stream of carriage returns).
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from tqdm import tqdm

from bestie.artifacts import write_text

__all__ = ["CsvLog", "progress"]

T = TypeVar("T")


class CsvLog:
    """A CSV table with fixed columns, rewritten atomically after each appended row.

    Args:
        path: the CSV file.
        columns: column names, in order; every row must give exactly these.
        precision: significant digits for float values.
    """

    def __init__(
        self, path: str | os.PathLike[str], columns: Sequence[str], *, precision: int = 6
    ) -> None:
        self.path = path
        self.columns = list(columns)
        self.precision = precision
        self.rows: list[dict[str, Any]] = []

    def restore(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replace the rows (e.g. with those saved in a checkpoint) and rewrite the file."""
        self.rows = [self._check(row) for row in rows]
        self._write()

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row (a mapping with exactly the columns) and rewrite the file."""
        self.rows.append(self._check(row))
        self._write()

    def _check(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if set(row) != set(self.columns):
            raise ValueError(
                f"{self.path}: log row keys {sorted(row)} differ from columns {self.columns}"
            )
        return {column: row[column] for column in self.columns}

    def _format(self, value: Any) -> Any:
        if isinstance(value, float) and math.isfinite(value):
            return f"{value:.{self.precision}g}"
        return value

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([self._format(row[column]) for column in self.columns])
        write_text(self.path, buffer.getvalue())


def progress(
    iterable: Iterable[T], *, total: int | None = None, description: str = "", initial: int = 0
) -> tqdm:
    """A tqdm progress bar (elapsed, ETA, rate) on stderr.

    Args:
        iterable: what to iterate over.
        total: number of items (defaults to ``len(iterable)``).
        description: prefix shown before the bar, e.g. ``"epoch 3/15"``.
        initial: items already done (when resuming a step-based loop).
    """
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=description,
        initial=initial,
        file=sys.stderr,
        dynamic_ncols=interactive,
        mininterval=0.1 if interactive else 30.0,
        leave=True,
    )
