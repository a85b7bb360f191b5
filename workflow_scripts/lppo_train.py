"""L-PPO for one model.  Rule `lppo_train` (rules/lppo.smk)."""
from icet.chain import Job
from icet.lppo.launch import run_lppo_job

job = Job(snakemake)  # inputs checked; an error ends the job's log

run_lppo_job(
    snakemake.input.model,
    snakemake.input.data,
    snakemake.params.workdir,
    params=snakemake.params.params,
    reward_model_dir=snakemake.input.reward,
    reward=snakemake.params.reward,
    seed=snakemake.params.seed,
    device=snakemake.params.tuning["device"],
    tuning=snakemake.params.tuning,
    threads=snakemake.threads,
    prompting=snakemake.params.prompting,
    num_layers=snakemake.params.num_layers,
    processes=snakemake.params.processes,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
