"""Provenance manifest of the run.  Rule `manifest` (rules/report.smk)."""
from icet.chain import Job
from icet.provenance import write_manifest

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_manifest(
    snakemake.output[0],
    config=snakemake.params.config,
    tuning=snakemake.params.tuning,
    files={**{group: list(snakemake.input[group]) for group in snakemake.input.keys()},
           **snakemake.params.folders},
    seeds=snakemake.params.seeds,
    extra=snakemake.params.extra,
    data_builds=snakemake.params.builds,
    downloads=snakemake.params.downloads,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
