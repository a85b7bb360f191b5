"""A seeded VQA-v2 subset.  Rule `build_vqa` (rules/datasets.smk)."""
from pathlib import Path

from icet.chain import Job
from icet.paper_jobs import build_vqa

job = Job(snakemake)  # inputs checked; an error ends the job's log

build_vqa(
    snakemake.input.questions,
    snakemake.input.annotations,
    snakemake.input.images,
    Path(snakemake.output[0]).parent,
    seed=snakemake.params.seed,
    size=snakemake.params.size,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
