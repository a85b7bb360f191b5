"""A zip archive, unpacked.  Rule `download_archive` (rules/download.smk)."""
from icet.chain import Job
from icet.download import download_archive

job = Job(snakemake)  # inputs checked; an error ends the job's log

download_archive(snakemake.params.url, snakemake.output[0], snakemake.params.sha256,
                 log=snakemake.log[0])
job.done()  # links: what the outputs were made from (icet.chain)
