"""A zip archive, unpacked.  Rule `download_archive` (rules/download.smk)."""
from icet.download import download_archive

download_archive(snakemake.params.url, snakemake.output[0], snakemake.params.sha256,
                 log=snakemake.log[0])
