"""Utility and over-refusal per layer.  Rule `table_utility` (rules/report.smk)."""
from icet.report.utility import write_utility_table

write_utility_table(
    list(snakemake.input.vqa),
    list(snakemake.input.xstest),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.params.report["bootstrap"],
    label=snakemake.params.report["caption_label"],
    judge=snakemake.params.report["judges"]["reward"],
    out_tex=snakemake.output.tex,
    log=snakemake.log[0],
)
