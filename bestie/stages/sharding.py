"""Shards of per-image stages: job i of n takes images i, i+n, i+2n, ... of a split.

Every per-image stage runs as ``num_shards`` independent jobs (Snakemake scatter) whose
outputs a gather job merges; the merged artifact does not depend on the shard count.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard", type=int, default=0, help="this job's shard index (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of shards")


def select_shard(items: Sequence[T], shard: int, num_shards: int) -> list[T]:
    """Items ``shard``, ``shard + num_shards``, ... of ``items``.

    Raises:
        ValueError: when the shard index is outside 0..num_shards-1.
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} of {num_shards}: need 0 <= shard < num_shards")
    return list(items[shard::num_shards])
