"""Per-layer safety metrics of every model.  Rule `table_layers` (rules/report.smk)."""
from icet.chain import Job
from icet.report.tables import write_layer_table

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_layer_table(
    list(snakemake.input),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.params.report["bootstrap"],
    judge=snakemake.params.report["judges"]["guard"],
    label=snakemake.params.report["caption_label"],
    out_tex=snakemake.output.tex,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
