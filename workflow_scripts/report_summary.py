"""The run's one-page summary.  Rule `report_summary` (rules/report.smk)."""
from icet.chain import Job
from icet.report.summary import write_summary

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_summary(
    snakemake.input.layers,
    snakemake.input.table2,
    snakemake.input.utility,
    snakemake.output[0],
    default_layers=snakemake.params.report["default_layers"],
    label=snakemake.params.report["label"],
    judges=snakemake.params.report["judges"],
    seed=snakemake.params.report["seed"],
    lppo_metrics=snakemake.params.lppo_metrics,
    target_kl=snakemake.params.target_kl,
    downloads=snakemake.params.downloads,
    thresholds=snakemake.params.thresholds,
    planted=snakemake.params.planted,
    score_files=list(snakemake.input.scores),
    reward_card=snakemake.params.reward_card,
    bootstrap=snakemake.params.report["bootstrap"],
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
