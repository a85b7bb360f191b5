"""A plain file by URL, checksum-checked.  Rule `download_advbench` (rules/download.smk)."""
from icet.chain import Job
from icet.download import download_url

job = Job(snakemake)  # inputs checked; an error ends the job's log

download_url(snakemake.params.url, snakemake.output[0], snakemake.params.sha256, log=snakemake.log[0],
             record=True)
job.done()  # links: what the outputs were made from (icet.chain)
