"""Our Table 2 against the paper's, with a verdict per claim.  Rule `report_reproduction` (rules/report.smk)."""
from icet.report.reproduction import write_reproduction

write_reproduction(
    snakemake.input[0],
    snakemake.output[0],
    label=snakemake.params.label,
    settings=snakemake.params.settings,
    data_builds=snakemake.params.builds,
    deviations=snakemake.params.deviations,
    scorers=snakemake.params.scorers,
    planted=snakemake.params.planted,
    log=snakemake.log[0],
)
