"""Per-layer ASR/TS/TR curves of one model.  Rule `figure_layers` (rules/report.smk)."""
from icet.report.figures import figure3

figure3(
    list(snakemake.input),
    snakemake.params.groups,
    snakemake.output.png,
    snakemake.params.caption,
    snakemake.params.report["bootstrap"],
    num_layers=snakemake.params.num_layers,
    out_pdf=snakemake.output.pdf,
    log=snakemake.log[0],
)
