"""Utility and over-refusal per layer, and Table 3 per layer group.  Rule `table_utility` (rules/report.smk)."""
from icet.chain import Job
from icet.report.utility import write_utility_tables

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_utility_tables(
    list(snakemake.input.vqa),
    list(snakemake.input.xstest),
    {key: snakemake.output[key] for key in ("csv", "md", "tex", "table3_csv", "table3_md",
                                            "table3_tex")},
    snakemake.params.report["bootstrap"],
    groups=snakemake.params.report["groups"],
    num_layers=snakemake.params.num_layers,
    label=snakemake.params.report["caption_label"],
    judge=snakemake.params.report["judges"]["utility_reward"],
    metric=snakemake.params.metric,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
