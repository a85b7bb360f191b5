# The toy model organism: a tiny LLaVA trained in stages, each at the default encoder layer
# only (no stage sees another layer's features), plus toy judges of the real judges' classes
# and formats. Each output is a save_pretrained folder, loaded downstream like a download.


# Why: one training stage of the toy organism (icet.toy.stages): vision (the encoder's layers
# learn to mean something), lm (a base LM that answers harmful requests, as a base LM is not
# safe), instruct (visual instruction tuning, as LLaVA's), safety (safety tuning: the organism
# the sweep probes), planted (the positive control: safety tuning with a layer-dependent
# target on purpose, icet.toy.planted).
rule train_toy_stage:
    input:
        unpack(toy_stage_inputs),
    output:
        directory(f"{RES}/toy/organism/{{stage}}"),
    log:
        f"{LOGS}/train_toy_stage/{{stage}}.log",
    benchmark:
        f"{LOGS}/train_toy_stage/{{stage}}.benchmark.tsv"
    params:
        stage=lambda w: w.stage,
        params=lambda w: toy_stage_params(w.stage),
        seed=config["seed"],
    threads: 1
    priority: TOY_ORGANISM_PRIORITY
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_stage.py"


# Why: toy judges in the real judges' formats, so the real judging code runs on them.
rule train_toy_judge:
    input:
        data=f"{RES}/toy/data/train_{{judge}}.jsonl",
        vocabulary=f"{RES}/toy/data/vocabulary.txt",
    output:
        directory(f"{RES}/toy/judges/{{judge}}"),
    log:
        f"{LOGS}/train_toy_judge/{{judge}}.log",
    benchmark:
        f"{LOGS}/train_toy_judge/{{judge}}.benchmark.tsv"
    wildcard_constraints:
        judge=TOY_JUDGE_PATTERN,
    params:
        judge=lambda w: w.judge,
        params=lambda w: TOY_JUDGE_PARAMS.get(w.judge, {}),
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_judge.py"
