"""One organism swept over every layer.  Rule `study_eval` (rules/organism_study.smk)."""
from icet.chain import Job
from icet.toy.study import evaluate_organism

job = Job(snakemake)  # inputs checked; an error ends the job's log

evaluate_organism(
    snakemake.input.model,
    snakemake.params.data_dir,
    snakemake.input.guard,
    snakemake.output.result,
    snakemake.output.responses,
    settings=snakemake.params.settings,
    bootstrap=snakemake.params.bootstrap,
    variant=snakemake.wildcards.name,
    seed=int(snakemake.wildcards.seed),
    threads=snakemake.threads,
    set_paths=list(snakemake.input.sets),
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
