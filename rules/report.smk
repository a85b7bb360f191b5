# Tables, figures, the run summary and the provenance manifest. Everything a reader
# compares with the paper lands in results/<run>/.


# Why: the paper's Table 2 (AASR/ATS/ATR per layer group, original vs aligned) for our run.
rule table2:
    input:
        safety_scores(MAIN_MODEL),
    output:
        csv=report(f"{RUN}/tables/table2.csv", caption="../report/table2.rst", category="Tables"),
        md=f"{RUN}/tables/table2.md",
        tex=f"{RUN}/tables/table2.tex",
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
        csv=report(f"{RUN}/tables/layers.csv", caption="../report/layers.rst", category="Tables"),
        md=f"{RUN}/tables/layers.md",
        tex=f"{RUN}/tables/layers.tex",
    log:
        f"{LOGS}/table_layers/{config['run']}.log",
    params:
        report=report_params(),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/table_layers.py"


# Why: utility (VQA accuracy, utility reward) and over-refusal (XSTest) per layer, and the
# paper's Table 3 shape beside it: utility per layer group, original vs aligned.
rule table_utility:
    input:
        vqa=utility_score_files("vqa"),
        xstest=utility_score_files("xstest"),
    output:
        csv=report(f"{RUN}/tables/utility.csv", caption="../report/utility.rst", category="Tables"),
        md=f"{RUN}/tables/utility.md",
        tex=f"{RUN}/tables/utility.tex",
        table3_csv=report(f"{RUN}/tables/table3.csv", caption="../report/table3.rst",
                          category="Tables"),
        table3_md=f"{RUN}/tables/table3.md",
        table3_tex=f"{RUN}/tables/table3.tex",
    log:
        f"{LOGS}/table_utility/{config['run']}.log",
    params:
        report=report_params(),
        num_layers=layer_counts(),
        metric=config["utility"]["vqa_metric"],
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/table_utility.py"


# Why: the paper's Figure 3: per-layer ASR, TS, TR before and after L-PPO.
rule figure3:
    input:
        safety_scores(MAIN_MODEL),
    output:
        png=report(f"{RUN}/figures/figure3.png", caption="../report/figure3.rst", category="Figures"),
        pdf=f"{RUN}/figures/figure3.pdf",
    log:
        f"{LOGS}/figure3/{config['run']}.log",
    params:
        report=report_params(),
        groups=MODELS[MAIN_MODEL]["groups"],
        num_layers=MODELS[MAIN_MODEL]["num_layers"],
        default_layer=default_layer(MAIN_MODEL),
        caption=figure_caption(MAIN_MODEL),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/figure3.py"


# Why: L-PPO's training curves (reward, KL, value loss, clip fraction) per model.
rule figure_lppo:
    input:
        f"{RUN}/lppo/{{model}}/metrics.csv",
    output:
        png=report(f"{RUN}/figures/lppo-{{model}}.png", caption="../report/lppo.rst",
                   category="Figures"),
        pdf=f"{RUN}/figures/lppo-{{model}}.pdf",
    log:
        f"{LOGS}/figure_lppo/{{model}}.log",
    params:
        title=lambda w: f"L-PPO training of {w.model} ({config['report']['label']}, seed {config['seed']})",
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/figure_lppo.py"


# Why: the paper's per-layer curves for every model (LLaVA-NeXT, Llama 3.2 Vision too).
rule figure_layers:
    input:
        lambda w: safety_scores(w.model),
    output:
        png=report(f"{RUN}/figures/layers-{{model}}.png", caption="../report/figure_layers.rst",
                   category="Figures"),
        pdf=f"{RUN}/figures/layers-{{model}}.pdf",
    log:
        f"{LOGS}/figure_layers/{{model}}.log",
    params:
        report=report_params(),
        groups=lambda w: MODELS[w.model]["groups"],
        num_layers=lambda w: MODELS[w.model]["num_layers"],
        default_layer=lambda w: default_layer(w.model),
        caption=lambda w: figure_caption(w.model),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/figure3.py"


# Why: ASR rests on one judge; how often do guard, keyword and toxicity judges agree? (And,
# for a planted control, each with its ground truth: rule planted_truth.)
rule table_agreement:
    input:
        scores=safety_scores(),
        truth=planted_truth_files(),
    output:
        csv=report(f"{RUN}/tables/agreement.csv", caption="../report/agreement.rst",
                   category="Tables"),
        md=f"{RUN}/tables/agreement.md",
        tex=f"{RUN}/tables/agreement.tex",
    log:
        f"{LOGS}/table_agreement/{config['run']}.log",
    params:
        report=report_params(),
        threshold=config["report"]["toxicity_threshold"],
        planted=planted_truth(),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/table_agreement.py"


# Why: the paper's Figure 1: one harmful prompt + safe image answered at several layers.
rule figure1:
    input:
        scores=lambda w: safety_scores(EXHIBITS["figure1"]["model"]),
        data=dataset(EXHIBITS["figure1"]["testset"]),
    output:
        png=report(f"{RUN}/figures/figure1.png", caption="../report/figure1.rst",
                   category="Figures"),
        pdf=f"{RUN}/figures/figure1.pdf",
    log:
        f"{LOGS}/figure1/{config['run']}.log",
    params:
        report=report_params(),
        exhibit=EXHIBITS["figure1"],
        show=config["report"]["show_responses"],
        shown_words=config["report"]["shown_words"],
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/figure1.py"


# Why: the paper's Tables 1, 4, 5: example responses by layer (and before/after L-PPO).
rule table_examples:
    wildcard_constraints:
        exhibit=EXHIBIT_TABLE_PATTERN,
    input:
        lambda w: safety_scores(EXHIBITS[w.exhibit]["model"]),
    output:
        csv=report(f"{RUN}/tables/{{exhibit}}.csv", caption="../report/examples.rst",
                   category="Tables"),
        md=f"{RUN}/tables/{{exhibit}}.md",
        tex=f"{RUN}/tables/{{exhibit}}.tex",
    log:
        f"{LOGS}/table_examples/{{exhibit}}.log",
    params:
        report=report_params(),
        exhibit=lambda w: EXHIBITS[w.exhibit],
        title=lambda w: EXHIBIT_TITLES.get(w.exhibit, w.exhibit),
        show=config["report"]["show_responses"],
        shown_words=config["report"]["shown_words"],
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/table_examples.py"


# Why: one page that says what this run shows, in plain words, labelled toy when it is.
rule report_summary:
    input:
        layers=f"{RUN}/tables/layers.csv",
        table2=f"{RUN}/tables/table2.csv",
        utility=f"{RUN}/tables/utility.csv",
        lppo=list(lppo_metric_files().values()),
        # The planted controls' responses and their ground truth, for detection and repair.
        scores=planted_score_files(),
        truth=planted_truth_files(),
    output:
        report(f"{RUN}/summary.md", caption="../report/summary.rst", category="Summary"),
    log:
        f"{LOGS}/report_summary/{config['run']}.log",
    params:
        report=report_params(),
        lppo_metrics=lppo_metric_files(),
        target_kl=config["lppo"]["target_kl"],
        downloads=download_paths(),
        thresholds=config["report"]["aligned"],
        reward_card=toy_reward_card(),
        planted=planted_truth(),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/report_summary.py"


# Why: each number of the paper's Table 2 beside ours, with a verdict per claim.
rule report_reproduction:
    input:
        f"{RUN}/tables/table2.csv",
        data=all_datasets(),
        # the planted control's detection and repair checks, failed ones named
        summary=f"{RUN}/summary.md",
    output:
        report(f"{RUN}/reproduction.md", caption="../report/reproduction.rst",
               category="Summary"),
    log:
        f"{LOGS}/report_reproduction/{config['run']}.log",
    params:
        label=config["report"]["label"],
        settings=chosen_settings()["settings"],
        deviations=chosen_settings()["deviations"],
        scorers=chosen_settings()["scorers"],
        builds=paper_builds(),
        planted=MAIN_MODEL if MAIN_MODEL in PLANTED_MODELS else None,
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/report_reproduction.py"


# Why: provenance: commit, config, versions, seeds and the sha256 of every input and output.
rule manifest:
    input:
        models=model_dirs(),
        judges=judge_inputs(),
        data=all_datasets(),
        results=manifest_results(),
        responses=all_sweep_outputs(),
        adapters=lppo_outputs(),
    output:
        f"{RUN}/manifest.json",
    log:
        f"{LOGS}/manifest/{config['run']}.log",
    params:
        config=RESULT_CONFIG,
        # speed and memory keys, recorded apart: changing one reruns nothing, not even this
        tuning=tuning(TUNING_CONFIG),
        seeds={"seed": config["seed"], "bootstrap": config["seed"], "lppo": lppo_seed()},
        folders={"responses": [f"{RUN}/sweep"]},
        builds=paper_builds(),
        downloads=download_paths(),
        extra={"label": config["report"]["label"], "image_processor_backend": image_backend(),
               "main_model": MAIN_MODEL, "measures": measure_decisions(config),
               "deviations": chosen_settings()["deviations"]},
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/manifest.py"
