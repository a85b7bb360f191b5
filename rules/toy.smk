# The toy model organism: a tiny LLaVA trained in stages, each at the default encoder layer
# only (no stage sees another layer's features), plus toy judges of the real judges' classes
# and formats. Each output is a save_pretrained folder, loaded downstream like a download.
# Toy runs only (the Snakefile); inputs, params and constraints: rules/toy_common.smk.


# Why: the toy world's images and prompts, generated, so the DAG runs with no download.
rule build_toy_data:
    output:
        expand(f"{RES}/toy/data/{{name}}.jsonl", name=TOY_DATA_FILES),
        vocabulary=f"{RES}/toy/data/vocabulary.txt",
        build=f"{RES}/toy/data/build.json",
        images=directory(f"{RES}/toy/data/images"),
    log:
        f"{LOGS}/build_toy_data/toy.log",
    params:
        # As the config gives them, else the toy schema's defaults (sizes are filled by
        # build_toy_data: the params stay what the config says).
        sizes=TOY.get("sizes", {}),
        image_size=toy_settings.value("image_size", TOY.get("image_size")),
        base_refusal_share=toy_settings.value("data.base_refusal_share",
                                              TOY.get("data", {}).get("base_refusal_share")),
        seed=config["seed"],
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/build_toy_data.py"


# Why: a word-level tokenizer over the toy world, saved in Hugging Face format.
rule build_toy_tokenizer:
    input:
        vocabulary=f"{RES}/toy/data/vocabulary.txt",
    output:
        directory(f"{RES}/toy/tokenizer"),
    log:
        f"{LOGS}/build_toy_tokenizer/toy.log",
    priority: TOY_ORGANISM_PRIORITY
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/build_toy_tokenizer.py"


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


# Why: the planted control's known answer, for the report's detection and repair checks and
# the judge-agreement table (icet.ground_truth): per harmful response, does it comply (the
# toy world's compliance templates), is it fluent, and what was the model trained to answer
# at that layer. The report reads these files, never the toy world.
rule planted_truth:
    input:
        lambda w: safety_scores(w.model),
    output:
        spec=f"{RUN}/planted/{{model}}/spec.json",
        truth=f"{RUN}/planted/{{model}}/truth.jsonl",
    log:
        f"{LOGS}/planted_truth/{{model}}.log",
    wildcard_constraints:
        model=PLANTED_PATTERN,
    params:
        # the planted stage's params (the seed it was planted with: the run's, as in
        # train_toy_stage), the model's layers and groups
        stage=TOY_STAGE_PARAMS.get("planted", {}),
        num_layers=lambda w: MODELS[w.model]["num_layers"],
        default_layer=lambda w: default_layer(w.model),
        groups=lambda w: MODELS[w.model]["groups"],
        seed=config["seed"],
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/planted_truth.py"
