"""One raw download of a data source (a file, a zip, a Hub snapshot).  Rule `download_data` (rules/download.smk)."""
from icet.chain import Job
from icet.datasets import fetch

job = Job(snakemake)  # inputs checked; an error ends the job's log

fetch(snakemake.params.settings, snakemake.output[0], log=snakemake.log[0])
job.done()  # links: what the outputs were made from (icet.chain)
