"""Judge agreement (guard, keyword, toxicity and any further ASR judge) per model.  Rule `table_agreement`."""
from icet.chain import Job
from icet.report.agreement import write_agreement_table

job = Job(snakemake)  # inputs checked; an error ends the job's log

write_agreement_table(
    list(snakemake.input.scores),
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.output.tex,
    judge_names={**snakemake.params.report["judges"],
                 "toxicity": f"{snakemake.params.report['judges']['toxicity']} >= "
                             f"{snakemake.params.threshold:g}"},
    toxicity_threshold=snakemake.params.threshold,
    label=snakemake.params.report["caption_label"],
    seed=snakemake.params.report["seed"],
    ground_truth={model: files["truth"] for model, files in snakemake.params.planted.items()},
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
