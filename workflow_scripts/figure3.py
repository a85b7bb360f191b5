"""The paper's Figure 3 for this run's main model.  Rule `figure3` (rules/report.smk)."""
from icet.report.figures import figure3

figure3(
    list(snakemake.input),
    snakemake.params.groups,
    snakemake.output.png,
    snakemake.params.caption,
    snakemake.params.report["bootstrap"],
    default_layer=snakemake.params.default_layer,
    num_layers=snakemake.params.num_layers,
    out_pdf=snakemake.output.pdf,
    log=snakemake.log[0],
)
