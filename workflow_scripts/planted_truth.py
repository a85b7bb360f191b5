"""The planted control's ground truth, for the report.  Rule `planted_truth` (rules/toy.smk)."""
from icet.chain import Job
from icet.toy.planted import write_ground_truth

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_ground_truth(
    list(snakemake.input),
    snakemake.output.spec,
    snakemake.output.truth,
    model=snakemake.wildcards.model,
    params=snakemake.params.stage,
    num_layers=snakemake.params.num_layers,
    default_layer=snakemake.params.default_layer,
    groups=snakemake.params.groups,
    seed=snakemake.params.seed,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
