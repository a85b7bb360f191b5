"""L-PPO training curves of one model.  Rule `figure_lppo` (rules/report.smk)."""
from icet.report.figures import training_curves

training_curves(
    snakemake.input[0],
    snakemake.output.png,
    title=snakemake.params.title,
    out_pdf=snakemake.output.pdf,
    log=snakemake.log[0],
)
