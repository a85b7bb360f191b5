"""Utility and over-refusal per layer.  Rule `table_utility` (rules/report.smk)."""
from icet.report.utility import write_table3, write_utility_table

write_utility_table(
    list(snakemake.input.vqa),
    list(snakemake.input.xstest),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.params.report["bootstrap"],
    label=snakemake.params.report["label"],
    judge=snakemake.params.report["judges"]["reward"],
    out_tex=snakemake.output.tex,
    metric=snakemake.params.metric,
    log=snakemake.log[0],
)
write_table3(
    list(snakemake.input.vqa),
    snakemake.params.report["groups"],
    snakemake.params.num_layers,
    snakemake.output.table3_csv,
    snakemake.output.table3_md,
    snakemake.params.report["bootstrap"],
    label=snakemake.params.report["label"],
    judge=snakemake.params.report["judges"]["reward"],
    metric=snakemake.params.metric,
    out_tex=snakemake.output.table3_tex,
    log=snakemake.log[0],
)
