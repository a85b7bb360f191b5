"""One toy judge (guard, reward model or toxicity).  Rules `train_toy_judge` (rules/toy.smk)
and `study_guard` (rules/organism_study.smk)."""
from icet.chain import Job
from icet.toy.stages import run_judge_training

job = Job(snakemake)  # inputs checked; an error ends the job's log

run_judge_training(
    snakemake.params.judge,
    snakemake.input.data,
    snakemake.input.vocabulary,
    snakemake.output[0],
    params=snakemake.params.params,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
