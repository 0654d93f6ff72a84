"""bestie: BESTIE (Kim et al., CVPR 2022) weakly-supervised instance segmentation.

A pure library: every pipeline stage is a function of its inputs; only ``bestie.stages``
touches files and only ``bestie.cli`` parses arguments. The Snakemake workflow in
``workflow/`` calls ``python -m bestie <stage>``.
"""

__version__ = "0.1.0"
