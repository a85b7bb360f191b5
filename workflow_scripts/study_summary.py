"""The organism study's table and figure.  Rule `study_summary` (rules/organism_study.smk)."""
from icet.chain import Job
from icet.toy.study import write_summary

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_summary(
    list(snakemake.input.evals),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.png,
    groups=snakemake.params.groups,
    criterion=snakemake.params.criterion,
    bootstrap=snakemake.params.bootstrap,
    hypotheses=snakemake.params.hypotheses,
    variant_groups=snakemake.params.variant_groups,
    bases=snakemake.params.bases,
    text_files=list(snakemake.input.text_evals),
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
