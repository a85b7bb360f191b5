"""The paper's Table 2 for this run's main model.  Rule `table2` (rules/report.smk)."""
from icet.chain import Job
from icet.report.tables import write_table2

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_table2(
    list(snakemake.input),
    snakemake.params.groups,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.params.report["bootstrap"],
    num_layers=snakemake.params.num_layers,
    judge=snakemake.params.report["judges"]["guard"],
    label=snakemake.params.report["caption_label"],
    out_tex=snakemake.output.tex,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
