"""The paper's Figure 1 (responses by layer, image shown).  Rule `figure1` (rules/report.smk)."""
import os

from icet.chain import Job
from icet.report.examples import figure1

job = Job(snakemake)  # inputs checked; an error ends the job's log

figure1(
    snakemake.params.exhibit,
    list(snakemake.input.scores),
    os.path.dirname(snakemake.input.data),
    snakemake.output.png,
    snakemake.output.pdf,
    show_responses=snakemake.params.show,
    shown_words=snakemake.params.shown_words,
    judge=snakemake.params.report["judges"]["guard"],
    seed=snakemake.params.report["seed"],
    label=snakemake.params.report["label"],
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
