"""L-PPO for one model.  Rule `lppo_train` (rules/lppo.smk)."""
from icet.lppo.trainer import train_lppo_job

train_lppo_job(
    snakemake.input.model,
    snakemake.input.data,
    snakemake.params.workdir,
    params=snakemake.params.params,
    reward_model_dir=snakemake.input.reward,
    reward=snakemake.params.reward,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    threads=snakemake.threads,
    prompting=snakemake.params.prompting,
    log=snakemake.log[0],
)
