"""ICET responses for one (model, variant, test set, chunk of layers).  Rule `sweep_shard`."""
from icet.chain import Job
from icet.sweep import run_sweep_job

job = Job(snakemake)  # inputs checked; an error ends the job's log

run_sweep_job(
    snakemake.input.model,
    snakemake.input.data,
    snakemake.params.layers,
    snakemake.output[0],
    num_layers=snakemake.params.num_layers,
    model_name=snakemake.wildcards.model,
    variant=snakemake.wildcards.variant,
    testset=snakemake.wildcards.testset,
    peft_adapter=snakemake.input.get("adapter"),
    max_new_tokens=snakemake.params.max_new_tokens,
    batch_size=snakemake.params.tuning["batch_size"],
    engine=snakemake.params.tuning["engine"],
    engine_batch_size=snakemake.params.tuning["engine_batch_size"],
    seed=snakemake.params.seed,
    prompt_suffix=snakemake.params.prompt_suffix,
    device=snakemake.params.tuning["device"],
    threads=snakemake.threads,
    prompting=snakemake.params.prompting,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
