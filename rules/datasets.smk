# Data set builders: every set becomes a JSONL of rows with stable ids (docs/contracts.md).
# A missing or unreadable image, an empty or duplicated id or a malformed row stops the
# build with one line naming the file and row. (The toy's sets: rules/toy.smk.)


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
