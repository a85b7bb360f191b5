"""L-PPO training curves of one model.  Rule `figure_lppo` (rules/report.smk)."""
from icet.chain import Job
from icet.report.figures import training_curves

job = Job(snakemake)  # inputs checked; an error ends the job's log

training_curves(
    snakemake.input[0],
    snakemake.output.png,
    title=snakemake.params.title,
    out_pdf=snakemake.output.pdf,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
