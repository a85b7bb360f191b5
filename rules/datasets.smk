# Data set builders: every set becomes a JSONL of rows with stable ids (docs/contracts.md).
# A missing or unreadable image, an empty or duplicated id or a malformed row stops the
# build with one line naming the file and row.

TOY_DATA_FILES = ["rt", "cp", "mr", "ac", "vqa", "xstest", "train_vision", "train_text",
                  "train_instruct", "train_safety", "train_guard", "train_reward",
                  "train_toxicity"]


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
        # As the config gives them, else schema/toy.schema.yaml's defaults (sizes are filled
        # by build_toy_data: the params stay what the config says).
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


# Why: each paper data source (a plug-in of icet.datasets: AdvBench's CP and AC, JailbreakV-28K's
# RT and MR, VQA-v2, XSTest, SafeBench) builds all its sets in one folder, at once: rule
# build_<source>, from its raw downloads. JailbreakV-28K's build also checks every image RT and
# MR need and names what is missing and how to get it; every sweep waits for it (data_gate).
for _source in data_plan.paper_sources():
    if _source.name not in config["data"]:  # an optional source this config leaves out
        continue

    rule:
        name:
            f"build_{_source.name}"
        input:
            **data_plan.build_inputs(_source, config["data"], RES),
        output:
            **{s.name: data_plan.dataset_path(RES, s.name) for s in _source.sets},
        log:
            f"{LOGS}/build_{_source.name}/{_source.name}.log",
        params:
            source=_source.name,
            seed=config["seed"],
            settings=_source.settings(config),
        conda:
            "../envs/download.yaml"
        script:
            "../workflow_scripts/build_dataset.py"
