# The organism study (issue 9): variants x seeds of the toy organism, each trained at the
# default encoder layer only, swept over every layer; one table and one figure.
# `snakemake --profile toy organism_study`. Variants: toy/organism_study.yaml. Stages a
# variant leaves unchanged are shared (their folder is named by a hash of what they are
# trained from), so the ViT and base LM of a seed train once.

from icet.toy.study import load_study, plan_study

# Checked and filled from schema/organism_study.schema.yaml (eval and criterion defaults).
STUDY = load_study(str(Path(workflow.basedir) / "toy" / "organism_study.yaml"))
STUDY_DIR = f"{RES}/toy/study"
STUDY_OUT = f"{RUN}/organism_study"
STUDY_PLAN = plan_study(STUDY, TOY_STAGE_PARAMS, TOY_ARCH, data_dir=f"{RES}/toy/data",
                        study_dir=STUDY_DIR, tokenizer=f"{RES}/toy/tokenizer")
STUDY_EVAL = STUDY["eval"]
STUDY_EVALS = [f"{STUDY_OUT}/eval/{variant}/seed{seed}.json"
               for variant, seeds in STUDY_PLAN["organisms"].items() for seed in seeds]


# Why: a variant's training file (e.g. harmful text dialogues ending in refusals).
rule study_data:
    input:
        lambda w: f"{RES}/toy/data/{STUDY_PLAN['data'][w.name]['source']}.jsonl",
    output:
        f"{STUDY_DIR}/data/{{name}}.jsonl",
    log:
        f"{LOGS}/study_data/{{name}}.log",
    wildcard_constraints:
        name="[^/]+",
    params:
        transform=lambda w: STUDY_PLAN["data"][w.name]["transform"],
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/study_data.py"


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


# Why: one organism swept over every encoder layer, judged (guard AND compliance check).
rule study_eval:
    input:
        model=lambda w: STUDY_PLAN["stages"][STUDY_PLAN["organisms"][w.name][int(w.seed)]]["path"],
        sets=[f"{RES}/toy/data/{STUDY_EVAL[k]}.jsonl"
              for k in ("harmful_set", "lookalike_set", "vqa_set")],
        guard=f"{RES}/toy/judges/guard",
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


# Why: the study's one table and one figure, with the effect verdict per seed and variant.
rule study_summary:
    input:
        STUDY_EVALS,
    output:
        csv=f"{STUDY_OUT}/summary.csv",
        md=f"{STUDY_OUT}/summary.md",
        png=f"{STUDY_OUT}/organism_study.png",
    log:
        f"{LOGS}/study_summary/study.log",
    params:
        groups=STUDY["groups"],
        criterion=STUDY["criterion"],
        bootstrap=config.get("bootstrap", {}),
        hypotheses={k: (v or {}).get("hypothesis", "") for k, v in STUDY["variants"].items()},
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/study_summary.py"
