"""``python -m bestie gather-cues``: merge the shard files of ``extract-cues`` into one.

``--shards a.h5 b.h5 ... --output cues/{split}.h5``; images in id order, the shards'
``shard`` attribute dropped, so the result does not depend on the shard count.
"""

from __future__ import annotations

import argparse
import logging

from bestie.artifacts import gather_cues

_LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="the shard files")
    parser.add_argument("--output", required=True, help="cues/{split}.h5")


def run(args: argparse.Namespace) -> None:
    gather_cues(args.shards, args.output)
    _LOG.info("gathered %d shard files into %s", len(args.shards), args.output)
