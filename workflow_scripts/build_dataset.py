"""Every set of one data source.  Rules `build_<source>` (rules/datasets.smk)."""
from pathlib import Path

from icet.datasets import build

build(
    snakemake.params.source,
    dict(snakemake.input.items()),
    Path(snakemake.output[0]).parent,
    seed=snakemake.params.seed,
    settings=snakemake.params.settings,
    log=snakemake.log[0],
)
