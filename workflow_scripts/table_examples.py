"""The paper's Tables 1, 4, 5 (example responses).  Rule `table_examples` (rules/report.smk)."""
from icet.chain import Job
from icet.report.examples import write_example_table

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_example_table(
    snakemake.wildcards.exhibit,
    snakemake.params.title,
    snakemake.params.exhibit,
    list(snakemake.input),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.tex,
    show_responses=snakemake.params.show,
    shown_words=snakemake.params.shown_words,
    judge=snakemake.params.report["judges"]["guard"],
    seed=snakemake.params.report["seed"],
    label=snakemake.params.report["label"],
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
