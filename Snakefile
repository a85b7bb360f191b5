# icet: layer-wise (ICET) safety of vision-language models, end to end.
#
#   snakemake --profile toy      # the toy organism, offline on a CPU, in minutes
#   snakemake --profile slurm    # the paper run on a SLURM cluster (config.yaml)
#
# This file only declares: version, config + schema check, the stage files, the targets.

from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The paper run's config, found beside this file (also when --directory points elsewhere);
# profiles and --configfile merge on top of it.
configfile: str(Path(workflow.basedir) / "config.yaml")


# `snakemake --report results/<run>/report.html`: every table and figure with its caption.
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/datasets.smk"


# The toy organism, its data and its planted control's ground truth: a toy run's rules, the
# only ones that import the toy (a paper run never parses them).
if IS_TOY:

    include: "rules/toy_common.smk"
    include: "rules/toy.smk"


include: "rules/sweep.smk"
include: "rules/score.smk"
include: "rules/lppo.smk"
include: "rules/report.smk"


# Everything: tables, figures, summary and the provenance manifest of this run.
rule all:
    input:
        final_outputs(),
    default_target: True


# Named stage targets: `snakemake --profile toy sweep` reruns/finishes one stage.
rule datasets:
    input:
        all_datasets(),


rule organism:
    input:
        toy_organism_outputs() if IS_TOY else [],


rule sweep:
    input:
        sweep_outputs("original"),


rule score:
    input:
        score_outputs("original"),


rule align:
    input:
        lppo_outputs(),


rule evaluate:
    input:
        score_outputs("aligned"),


# ASR at L-PPO's trained layers before vs after (toy: with --configfile toy/presafety.yaml).
rule learning:
    input:
        learning_outputs(),


rule tables:
    input:
        table_outputs(),


rule figures:
    input:
        figure_outputs(),


# The organism study (toy runs only: `snakemake --profile toy organism_study`), a module so
# that a paper run never parses toy files.
if IS_TOY:

    module organism_study:
        snakefile:
            "rules/organism_study.smk"
        config:
            # `--config organism_study=toy/organism_study_round2.yaml` picks another study file.
            {**config, "organism_study": str(Path(workflow.basedir) / config.get(
                "organism_study", "toy/organism_study.yaml"))}

    use rule * from organism_study


# `snakemake --forcerun score_testset sweep` takes `sweep` as one more rule to force and
# builds the whole run instead: a target rule after --forcerun stops here (icet.command_line).
check_command_line([r.name for r in workflow.rules if not r.output])


onsuccess:
    print_time_table(RUN, LOGS)
    print_checks(f"{RUN}/summary.md")
