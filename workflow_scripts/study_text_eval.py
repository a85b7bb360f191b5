"""A text-safe LM without images, for its gate.  Rule `study_text_eval` (rules/organism_study.smk)."""
from icet.chain import Job
from icet.toy.study import evaluate_text_model

job = Job(snakemake)  # inputs checked; an error ends the job's log

evaluate_text_model(
    snakemake.input.model,
    snakemake.output[0],
    set_paths=list(snakemake.input.sets),
    settings=snakemake.params.settings,
    variant=snakemake.wildcards.name,
    seed=int(snakemake.wildcards.seed),
    threads=snakemake.threads,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
