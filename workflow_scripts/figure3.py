"""Per-layer ASR/TS/TR curves: the paper's Figure 3 (rule `figure3`, the main model) and the
same curves for every model (rule `figure_layers`), rules/report.smk."""
from icet.chain import Job
from icet.report.figures import figure3

job = Job(snakemake)  # inputs checked; an error ends the job's log

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
job.done()  # links: what the outputs were made from (icet.chain)
