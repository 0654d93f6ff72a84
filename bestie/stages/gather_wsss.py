"""``python -m bestie gather-wsss``: merge WSSS map shards and score them (see make_wsss)."""

from bestie.stages.make_wsss import add_gather_arguments as add_arguments
from bestie.stages.make_wsss import run_gather as run

__all__ = ["add_arguments", "run"]
