"""Every set of one data source.  Rules `build_<source>` (rules/datasets.smk)."""
from pathlib import Path

from icet.chain import Job
from icet.datasets import build

job = Job(snakemake)  # inputs checked; an error ends the job's log

build(
    snakemake.params.source,
    dict(snakemake.input.items()),
    Path(snakemake.output[0]).parent,
    seed=snakemake.params.seed,
    settings=snakemake.params.settings,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
