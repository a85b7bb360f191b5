"""One training stage of the toy organism.  Rules `train_toy_*` (rules/toy.smk) and
`study_stage` (rules/organism_study.smk)."""
from icet.chain import Job
from icet.toy.stages import run_stage

job = Job(snakemake)  # inputs checked; an error ends the job's log

run_stage(
    snakemake.params.stage,
    dict(snakemake.input.items()),
    snakemake.output[0],
    params=snakemake.params.params,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
