"""Our Table 2 against the paper's, with a verdict per claim.  Rule `report_reproduction` (rules/report.smk)."""
from icet.chain import Job
from icet.report.reproduction import write_reproduction

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_reproduction(
    snakemake.input[0],
    snakemake.output[0],
    label=snakemake.params.label,
    settings=snakemake.params.settings,
    data_builds=snakemake.params.builds,
    deviations=snakemake.params.deviations,
    scorers=snakemake.params.scorers,
    planted=snakemake.params.planted,
    summary=snakemake.input.summary,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
