# Tables, figures, the run summary and the provenance manifest. Everything a reader
# compares with the paper lands in results/<run>/.


# Why: the paper's Table 2 (AASR/ATS/ATR per layer group, original vs aligned) for our run.
rule table2:
    input:
        safety_scores(MAIN_MODEL),
    output:
        csv=f"{RUN}/tables/table2.csv",
        md=f"{RUN}/tables/table2.md",
    log:
        f"{LOGS}/table2/{config['run']}.log",
    params:
        report=report_params(),
        groups=MODELS[MAIN_MODEL]["groups"],
        num_layers=MODELS[MAIN_MODEL]["num_layers"],
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/table2.py"


# Why: every layer's ASR/TS/TR/refusal with bootstrap CIs: the numbers behind Figure 3.
rule table_layers:
    input:
        safety_scores(),
    output:
        csv=f"{RUN}/tables/layers.csv",
        md=f"{RUN}/tables/layers.md",
    log:
        f"{LOGS}/table_layers/{config['run']}.log",
    params:
        report=report_params(),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/table_layers.py"


# Why: utility (VQA accuracy, utility reward) and over-refusal (XSTest) per layer.
rule table_utility:
    input:
        vqa=[score_file(m, v, "vqa").replace(".jsonl", ".utility.jsonl") for m in MODELS for v in variants(m)] if "vqa" in UTILITY_SETS else [],
        xstest=[score_file(m, v, "xstest") for m in MODELS for v in variants(m)] if "xstest" in UTILITY_SETS else [],
    output:
        csv=f"{RUN}/tables/utility.csv",
        md=f"{RUN}/tables/utility.md",
    log:
        f"{LOGS}/table_utility/{config['run']}.log",
    params:
        report=report_params(),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/table_utility.py"


# Why: the paper's Figure 3: per-layer ASR, TS, TR before and after L-PPO.
rule figure3:
    input:
        safety_scores(MAIN_MODEL),
    output:
        f"{RUN}/figures/figure3.png",
    log:
        f"{LOGS}/figure3/{config['run']}.log",
    params:
        report=report_params(),
        groups=MODELS[MAIN_MODEL]["groups"],
        num_layers=MODELS[MAIN_MODEL]["num_layers"],
        default_layer=default_layer(MAIN_MODEL),
        caption={"judge": report_params()["judges"]["guard"], "seed": config["seed"],
                 "model": MAIN_MODEL, "label": config["report"]["label"]},
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/figure3.py"


# Why: L-PPO's training curves (reward, KL, value loss, clip fraction) per model.
rule figure_lppo:
    input:
        f"{RUN}/lppo/{{model}}/metrics.csv",
    output:
        f"{RUN}/figures/lppo-{{model}}.png",
    log:
        f"{LOGS}/figure_lppo/{{model}}.log",
    params:
        title=lambda w: f"L-PPO training of {w.model} ({config['report']['label']}, seed {config['seed']})",
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/figure_lppo.py"


# Why: one page that says what this run shows, in plain words, labelled toy when it is.
rule report_summary:
    input:
        layers=f"{RUN}/tables/layers.csv",
        table2=f"{RUN}/tables/table2.csv",
        utility=f"{RUN}/tables/utility.csv",
        lppo=[f"{RUN}/lppo/{m}/metrics.csv" for m in lppo_models()],
    output:
        f"{RUN}/summary.md",
    log:
        f"{LOGS}/report_summary/{config['run']}.log",
    params:
        report=report_params(),
        lppo_metrics={m: f"{RUN}/lppo/{m}/metrics.csv" for m in lppo_models()},
        target_kl=config["lppo"]["target_kl"],
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/report_summary.py"


# Why: each number of the paper's Table 2 beside ours, with a verdict per claim.
rule report_reproduction:
    input:
        f"{RUN}/tables/table2.csv",
    output:
        f"{RUN}/reproduction.md",
    log:
        f"{LOGS}/report_reproduction/{config['run']}.log",
    params:
        label=config["report"]["label"],
        settings=chosen_settings(),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/report_reproduction.py"


# Why: provenance: commit, config, versions, seeds and the sha256 of every input and output.
rule manifest:
    input:
        models=[model_dir(m) for m in MODELS],
        judges=judge_inputs(),
        data=all_datasets(),
        results=table_outputs() + figure_outputs() + [f"{RUN}/summary.md", f"{RUN}/reproduction.md"] + all_score_files(),
        responses=sweep_outputs("original") + sweep_outputs("aligned"),
        adapters=lppo_outputs(),
    output:
        f"{RUN}/manifest.json",
    log:
        f"{LOGS}/manifest/{config['run']}.log",
    params:
        config=dict(config),
        seeds={"seed": config["seed"], "bootstrap": config["seed"], "lppo": config["seed"]},
        folders={"responses": [f"{RUN}/sweep"]},
        extra={"label": config["report"]["label"], "image_processor_backend": image_backend(),
               "main_model": MAIN_MODEL},
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/manifest.py"
