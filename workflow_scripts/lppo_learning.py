"""ASR at L-PPO's trained layers, before vs after.  Rule `lppo_learning` (rules/lppo.smk)."""
from icet.chain import Job
from icet.lppo.learning import learning_report

job = Job(snakemake)  # inputs checked; an error ends the job's log

learning_report(
    snakemake.input.scores,
    snakemake.output.md,
    snakemake.output.json,
    model=snakemake.wildcards.model,
    params=snakemake.params.params,
    num_layers=snakemake.params.num_layers,
    default_layer=snakemake.params.default_layer,
    bootstrap=snakemake.params.report["bootstrap"],
    label=snakemake.params.report["label"],
    judge=snakemake.params.report["judges"]["guard"],
    seed=snakemake.params.report["seed"],
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
