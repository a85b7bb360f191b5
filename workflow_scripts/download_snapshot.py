"""A pinned Hub snapshot (model, judge or data set).  Rules `download_*` (rules/download.smk)."""
from icet.chain import Job
from icet.download import download_snapshot

job = Job(snakemake)  # inputs checked; an error ends the job's log

download_snapshot(
    snakemake.params.repo,
    snakemake.params.revision,
    snakemake.output[0],
    repo_type=snakemake.params.get("repo_type", "model"),
    allow_patterns=snakemake.params.get("allow_patterns"),
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
