# Judging: every response gets Llama Guard's verdict (ASR), Detoxify toxicity (TS), the
# HH-RLHF reward (TR), the refusal-keyword verdict and any further judge the config names
# (the plug-ins of icet.judges.base, e.g. HarmBench's classifier). One job per (model,
# variant, test set): each judge loads once for all of its layers.


# Why: ASR/TS/TR/refusal of every response of one (model, variant, test set).
rule score_testset:
    input:
        shards=lambda w: sweep_indexes(w.model, w.variant, w.testset),
        judges=judge_inputs(),
    output:
        f"{RUN}/scores/{{model}}/{{variant}}/{{testset}}.jsonl",
    log:
        f"{LOGS}/score_testset/{{model}}/{{variant}}/{{testset}}.log",
    benchmark:
        f"{LOGS}/score_testset/{{model}}/{{variant}}/{{testset}}.benchmark.tsv"
    params:
        judges=judges_for_scoring(),
        tuning=tuning({"batch_sizes": judge_batch_sizes(),
                       "device": job_device(config["device"],
                                            config["scoring_resources"]["safety"]["gpu"])}),
    threads: 1
    resources:
        **scoring_resources(config["scoring_resources"]["safety"], "score_testset"),
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/score_testset.py"


# Why: utility on VQA: answer accuracy and the utility reward model's score (Table 3).
rule score_utility:
    input:
        shards=lambda w: sweep_indexes(w.model, w.variant, "vqa"),
        reward=judge_path("utility_reward"),
    output:
        f"{RUN}/scores/{{model}}/{{variant}}/vqa.utility.jsonl",
    log:
        f"{LOGS}/score_utility/{{model}}/{{variant}}.log",
    benchmark:
        f"{LOGS}/score_utility/{{model}}/{{variant}}.benchmark.tsv"
    params:
        reward=utility_reward_settings(RESULT_CONFIG),
        metric=config["utility"]["vqa_metric"],
        tuning=tuning({"batch_size": TUNING_CONFIG["judges"]["utility_reward"]["batch_size"],
                       "device": job_device(config["device"],
                                            config["scoring_resources"]["utility"]["gpu"])}),
    threads: 1
    resources:
        **scoring_resources(config["scoring_resources"]["utility"], "score_utility"),
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/score_utility.py"
