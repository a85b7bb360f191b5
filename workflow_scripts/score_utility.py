"""VQA accuracy and utility reward of one (model, variant).  Rule `score_utility` (rules/score.smk)."""
from icet.chain import Job
from icet.judges.vqa import score_utility

job = Job(snakemake)  # inputs checked; an error ends the job's log

score_utility(
    list(snakemake.input.shards),
    snakemake.output[0],
    snakemake.input.reward,
    metric=snakemake.params.metric,
    device=snakemake.params.tuning["device"],
    threads=snakemake.threads,
    log=snakemake.log[0],
    batch_size=snakemake.params.tuning["batch_size"],
    **snakemake.params.reward,
)
job.done()  # links: what the outputs were made from (icet.chain)
