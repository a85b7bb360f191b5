"""XSTest's safe prompts with safe images.  Rule `build_xstest` (rules/datasets.smk)."""
from pathlib import Path

from icet.chain import Job
from icet.paper_jobs import build_xstest

job = Job(snakemake)  # inputs checked; an error ends the job's log

build_xstest(
    snakemake.input.xstest,
    snakemake.input.images,
    Path(snakemake.output[0]).parent,
    seed=snakemake.params.seed,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
