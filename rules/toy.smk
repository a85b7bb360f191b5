# The toy model organism: a tiny LLaVA trained in four stages, each at the default encoder
# layer only (no stage sees another layer's features), plus toy judges of the real judges'
# classes and formats. Each output is a save_pretrained folder, loaded downstream like a
# download.

TOY = config.get("toy", {})
TOY_ARCH = TOY.get("arch", {})
TOY_STAGE_PARAMS = TOY.get("stages", {})
TOY_JUDGE_PARAMS = TOY.get("judges", {})


# Why: stage 0, so the encoder's layers mean something: classify shape and colour.
rule train_toy_vision:
    input:
        data=f"{RES}/toy/data/train_vision.jsonl",
        tokenizer=f"{RES}/toy/tokenizer",
    output:
        directory(f"{RES}/toy/organism/vision"),
    log:
        f"{LOGS}/train_toy_vision/toy.log",
    benchmark:
        f"{LOGS}/train_toy_vision/toy.benchmark.tsv"
    params:
        stage="vision",
        params={**TOY_STAGE_PARAMS.get("vision", {}), "arch": TOY_ARCH},
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_stage.py"


# Why: stage 1, a base LM that answers harmful requests (a base LM is not safe).
rule train_toy_lm:
    input:
        data=f"{RES}/toy/data/train_text.jsonl",
        tokenizer=f"{RES}/toy/tokenizer",
    output:
        directory(f"{RES}/toy/organism/lm"),
    log:
        f"{LOGS}/train_toy_lm/toy.log",
    benchmark:
        f"{LOGS}/train_toy_lm/toy.benchmark.tsv"
    params:
        stage="lm",
        params={**TOY_STAGE_PARAMS.get("lm", {}), "arch": TOY_ARCH},
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_stage.py"


# Why: stage 2, visual instruction tuning at the default layer (as LLaVA's training).
rule train_toy_instruct:
    input:
        vision=f"{RES}/toy/organism/vision",
        lm=f"{RES}/toy/organism/lm",
        data=f"{RES}/toy/data/train_instruct.jsonl",
        tokenizer=f"{RES}/toy/tokenizer",
    output:
        directory(f"{RES}/toy/organism/instruct"),
    log:
        f"{LOGS}/train_toy_instruct/toy.log",
    benchmark:
        f"{LOGS}/train_toy_instruct/toy.benchmark.tsv"
    params:
        stage="instruct",
        params={**TOY_STAGE_PARAMS.get("instruct", {}), "arch": TOY_ARCH},
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_stage.py"


# Why: stage 3, safety tuning at the default layer only: the organism the sweep probes.
rule train_toy_safety:
    input:
        model=f"{RES}/toy/organism/instruct",
        data=f"{RES}/toy/data/train_safety.jsonl",
        tokenizer=f"{RES}/toy/tokenizer",
    output:
        directory(f"{RES}/toy/organism/safety"),
    log:
        f"{LOGS}/train_toy_safety/toy.log",
    benchmark:
        f"{LOGS}/train_toy_safety/toy.benchmark.tsv"
    params:
        stage="safety",
        params={**TOY_STAGE_PARAMS.get("safety", {}), "arch": TOY_ARCH},
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_stage.py"


# Why: the planted positive control (issue 17): stage 3 with a layer-dependent target on
# purpose (icet.toy.planted), so the run shows detection and repair on a known answer.
rule train_toy_planted:
    input:
        model=f"{RES}/toy/organism/instruct",
        data=f"{RES}/toy/data/train_safety.jsonl",
        tokenizer=f"{RES}/toy/tokenizer",
    output:
        directory(f"{RES}/toy/organism/planted"),
    log:
        f"{LOGS}/train_toy_planted/toy.log",
    benchmark:
        f"{LOGS}/train_toy_planted/toy.benchmark.tsv"
    params:
        stage="planted",
        params={**TOY_STAGE_PARAMS.get("planted", {}), "arch": TOY_ARCH},
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_stage.py"


# Why: toy judges in the real judges' formats, so the real judging code runs on them.
rule train_toy_judge:
    input:
        data=lambda w: f"{RES}/toy/data/train_{w.judge}.jsonl",
        vocabulary=f"{RES}/toy/data/vocabulary.txt",
    output:
        directory(f"{RES}/toy/judges/{{judge}}"),
    log:
        f"{LOGS}/train_toy_judge/{{judge}}.log",
    benchmark:
        f"{LOGS}/train_toy_judge/{{judge}}.benchmark.tsv"
    wildcard_constraints:
        judge="|".join(TOY_JUDGES) or "none",
    params:
        params=lambda w: TOY_JUDGE_PARAMS.get(w.judge, {}),
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train_toy_judge.py"
