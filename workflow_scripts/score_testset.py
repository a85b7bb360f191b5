"""Judge every response of one (model, variant, test set).  Rule `score_testset` (rules/score.smk)."""
from icet.chain import Job
from icet.score import score_responses

job = Job(snakemake)  # inputs checked; an error ends the job's log

score_responses(
    list(snakemake.input.shards),
    snakemake.output[0],
    snakemake.params.judges,
    device=snakemake.params.tuning["device"],
    batch_sizes=snakemake.params.tuning["batch_sizes"],
    threads=snakemake.threads,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
