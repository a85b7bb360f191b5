"""Judge every response of one (model, variant, test set).  Rule `score_testset` (rules/score.smk)."""
from icet.score import score_responses

score_responses(
    list(snakemake.input.shards),
    snakemake.output[0],
    snakemake.params.judges,
    device=snakemake.params.device,
    threads=snakemake.threads,
    log=snakemake.log[0],
)
