"""One raw download of a data source (a file, a zip, a Hub snapshot).  Rule `download_data` (rules/download.smk)."""
from icet.datasets import fetch

fetch(snakemake.params.settings, snakemake.output[0], log=snakemake.log[0])
