"""CP and AC from AdvBench and COCO.  Rule `build_advbench` (rules/datasets.smk)."""
from pathlib import Path

from icet.chain import Job
from icet.paper_jobs import build_advbench

job = Job(snakemake)  # inputs checked; an error ends the job's log

build_advbench(
    snakemake.input.advbench,
    snakemake.input.coco,
    Path(snakemake.output.cp).parent,
    seed=snakemake.params.seed,
    cp_prompts=snakemake.params.cp_prompts,
    cp_images=snakemake.params.cp_images,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
