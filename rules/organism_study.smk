# The organism study: variants x seeds of the toy organism, each trained at the default
# encoder layer only, swept over every layer; one table and one figure.
# `snakemake --profile toy organism_study`. Variants: toy/organism_study.yaml (round 2:
# `--config organism_study=toy/organism_study_round2.yaml`; round 3: its step 0, calibration,
# main and 24-layer files, toy/organism_study_round3*.yaml, docs/toy-organism.md). A Snakemake module (used from
# the Snakefile for toy runs only, so a paper run never parses toy files); its config is the
# run's, plus `organism_study` (the study file's path). Results go to results/<run>/ under
# the study file's name. Stages a variant
# leaves unchanged are shared (their folder is named by a hash of what they are trained
# from), so the ViT and base LM of a seed train once.

from pathlib import Path

from icet.toy.study import derived_data, load_study, plan_study

RES = config["resources_dir"]
RUN = f"results/{config['run']}"
LOGS = f"logs/{config['run']}"
# Checked and filled from src/icet/schemas/organism_study.schema.yaml (eval and criterion defaults).
STUDY = load_study(config["organism_study"])
STUDY_DIR = f"{RES}/toy/study"
# Each study file its own results folder (toy/organism_study.yaml -> organism_study), so a
# second round never overwrites the first; stages are shared by hash across rounds.
STUDY_OUT = f"{RUN}/{Path(config['organism_study']).stem}"
STUDY_PLAN = plan_study(STUDY, config.get("toy", {}).get("stages", {}),
                        config.get("toy", {}).get("arch", {}), data_dir=f"{RES}/toy/data",
                        study_dir=STUDY_DIR, tokenizer=f"{RES}/toy/tokenizer",
                        out_dir=STUDY_OUT, guard=f"{RES}/toy/judges/guard",
                        guard_params=config.get("toy", {}).get("judges", {}).get("guard", {}),
                        organism_dir=f"{RES}/toy/organism")
STUDY_EVAL = STUDY["eval"]


# The study's one table and figure: `snakemake --profile toy organism_study`.
rule organism_study:
    input:
        f"{STUDY_OUT}/summary.csv",
        f"{STUDY_OUT}/summary.md",
        f"{STUDY_OUT}/organism_study.png",


# Why: a variant's training file (e.g. harmful text dialogues ending in refusals).
rule study_data:
    input:
        lambda w: f"{RES}/toy/data/{derived_data(STUDY_PLAN, w.name)['source']}.jsonl",
    output:
        f"{STUDY_DIR}/data/{{name}}.jsonl",
    log:
        f"{LOGS}/study_data/{{name}}.log",
    wildcard_constraints:
        name="[^/]+",
    params:
        transform=lambda w: derived_data(STUDY_PLAN, w.name)["transform"],
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/study_data.py"


# Why: a variant's own test set (compositional harm), beside the toy's test sets so that its
# image paths stay inside its folder.
use rule study_data as study_test_set with:
    output:
        f"{RES}/toy/data/study-{{name}}.jsonl",
    log:
        f"{LOGS}/study_data/study-{{name}}.log",
    wildcard_constraints:
        name="[^/]+",


# Why: one training stage of one variant x seed, at the default encoder layer only.
rule study_stage:
    input:
        unpack(lambda w: STUDY_PLAN["stages"][w.stage_id]["inputs"]),
    output:
        directory(f"{STUDY_DIR}/stages/{{stage_id}}"),
    log:
        f"{LOGS}/study_stage/{{stage_id}}.log",
    benchmark:
        f"{LOGS}/study_stage/{{stage_id}}.benchmark.tsv"
    wildcard_constraints:
        stage_id="[^/]+",
    params:
        stage=lambda w: STUDY_PLAN["stages"][w.stage_id]["stage"],
        params=lambda w: STUDY_PLAN["stages"][w.stage_id]["params"],
        seed=lambda w: STUDY_PLAN["stages"][w.stage_id]["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_stage.py"


# Why: a toy guard for a variant's own world (compositional harm), trained as the toy's.
rule study_guard:
    input:
        data=lambda w: STUDY_PLAN["guards"][w.guard_id]["data"],
        vocabulary=lambda w: STUDY_PLAN["guards"][w.guard_id]["vocabulary"],
    output:
        directory(f"{STUDY_DIR}/guards/{{guard_id}}"),
    log:
        f"{LOGS}/study_guard/{{guard_id}}.log",
    benchmark:
        f"{LOGS}/study_guard/{{guard_id}}.benchmark.tsv"
    wildcard_constraints:
        guard_id="[^/]+",
    params:
        judge="guard",
        params=lambda w: STUDY_PLAN["guards"][w.guard_id]["params"],
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_judge.py"


# Why: one organism swept over every encoder layer, judged (guard AND compliance check).
rule study_eval:
    input:
        model=lambda w: STUDY_PLAN["paths"][w.name][int(w.seed)],
        sets=lambda w: STUDY_PLAN["eval_inputs"][w.name]["sets"],
        guard=lambda w: STUDY_PLAN["eval_inputs"][w.name]["guard"],
    output:
        result=f"{STUDY_OUT}/eval/{{name}}/seed{{seed}}.json",
        responses=f"{STUDY_OUT}/eval/{{name}}/seed{{seed}}.responses.jsonl",
    log:
        f"{LOGS}/study_eval/{{name}}-seed{{seed}}.log",
    benchmark:
        f"{LOGS}/study_eval/{{name}}-seed{{seed}}.benchmark.tsv"
    wildcard_constraints:
        seed=r"\d+",
    params:
        data_dir=lambda w, input: str(Path(input.sets[0]).parent),
        settings=STUDY_EVAL,
        bootstrap=config.get("bootstrap", {}),
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/study_eval.py"


# Why: a text-safe LM (stage text_safety, the Vicuna analogue) without images: its refusal is
# the gate of the variants built on it.
rule study_text_eval:
    input:
        model=lambda w: STUDY_PLAN["text_evals"][w.name][int(w.seed)][1],
        sets=lambda w: STUDY_PLAN["eval_inputs"][w.name]["sets"][:2],
    output:
        f"{STUDY_OUT}/text/{{name}}/seed{{seed}}.json",
    log:
        f"{LOGS}/study_text_eval/{{name}}-seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    params:
        settings=STUDY_EVAL,
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/study_text_eval.py"


# Why: the study's one table and one figure, with the effect verdict per seed and variant.
rule study_summary:
    input:
        evals=STUDY_PLAN["evals"],
        text_evals=[f for by_seed in STUDY_PLAN["text_evals"].values() for f, _ in by_seed.values()],
    output:
        csv=f"{STUDY_OUT}/summary.csv",
        md=f"{STUDY_OUT}/summary.md",
        png=f"{STUDY_OUT}/organism_study.png",
    log:
        f"{LOGS}/study_summary/{Path(config['organism_study']).stem}.log",
    params:
        groups=STUDY["groups"],
        criterion=STUDY["criterion"],
        bootstrap=config.get("bootstrap", {}),
        hypotheses=STUDY_PLAN["hypotheses"],
        variant_groups=STUDY_PLAN["groups"],
        bases=STUDY_PLAN["bases"],
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/study_summary.py"
