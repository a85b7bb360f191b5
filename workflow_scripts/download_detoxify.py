"""Detoxify's checkpoint and BERT config as local files.  Rule `download_detoxify` (rules/download.smk)."""
from icet.chain import Job
from icet.download import download_detoxify

job = Job(snakemake)  # inputs checked; an error ends the job's log

download_detoxify(
    snakemake.params.checkpoint_url,
    snakemake.params.config_repo,
    snakemake.params.revision,
    snakemake.output[0],
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
