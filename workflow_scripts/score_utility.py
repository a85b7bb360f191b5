"""VQA accuracy and utility reward of one (model, variant).  Rule `score_utility` (rules/score.smk)."""
from icet.judges.vqa import score_utility

score_utility(
    list(snakemake.input.shards),
    snakemake.output[0],
    snakemake.input.reward,
    metric=snakemake.params.metric,
    device=snakemake.params.device,
    threads=snakemake.threads,
    log=snakemake.log[0],
    **snakemake.params.reward,
)
