"""Generate the toy world's data sets.  Rule `build_toy_data` (rules/toy.smk)."""
from pathlib import Path

from icet.chain import Job
from icet.toy.datasets import build_toy_data

job = Job(snakemake)  # inputs checked; an error ends the job's log

build_toy_data(
    Path(snakemake.output.build).parent,
    sizes=snakemake.params.sizes,
    image_size=snakemake.params.image_size,
    seed=snakemake.params.seed,
    base_refusal_share=snakemake.params.base_refusal_share,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
