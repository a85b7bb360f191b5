"""A plain file by URL, checksum-checked.  Rule `download_advbench` (rules/download.smk)."""
from icet.download import download_url

download_url(snakemake.params.url, snakemake.output[0], snakemake.params.sha256, log=snakemake.log[0],
             record=True)
