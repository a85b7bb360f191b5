# Downloads: pinned revisions, safetensors and configs only, on the login node (local
# rules: compute nodes often have no internet). Each writes to a temporary folder and
# renames it when complete, so an interrupted download never looks finished.

localrules:
    download_model,
    download_judge,
    download_detoxify,
    download_data,


# Why: the VLM weights, once, at the revision the config pins.
rule download_model:
    output:
        directory(f"{RES}/models/{{model}}"),
    log:
        f"{LOGS}/download_model/{{model}}.log",
    params:
        repo=lambda w: MODELS[w.model]["repo"],
        revision=lambda w: MODELS[w.model]["revision"],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/download_snapshot.py"


# Why: the judges that are Hub snapshots (Llama Guard, the reward models, HarmBench's
# classifier): every plug-in with download "snapshot" (icet.judges.base).
rule download_judge:
    output:
        directory(f"{RES}/judges/{{judge}}"),
    log:
        f"{LOGS}/download_judge/{{judge}}.log",
    wildcard_constraints:
        judge="|".join(j for j, cls in JUDGES.items() if cls.download == "snapshot") or "none",
    params:
        repo=lambda w: judge_spec(w.judge)["repo"],
        revision=lambda w: judge_spec(w.judge)["revision"],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/download_snapshot.py"


# Why: Detoxify fetches its checkpoint and BERT config at run time; we fetch them once so
# scoring runs offline on compute nodes.
rule download_detoxify:
    output:
        directory(f"{RES}/judges/toxicity"),
    log:
        f"{LOGS}/download_detoxify/toxicity.log",
    params:
        checkpoint_url=config["judges"]["toxicity"].get("checkpoint_url"),
        config_repo=config["judges"]["toxicity"].get("config_repo"),
        revision=config["judges"]["toxicity"].get("revision", "main"),
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/download_detoxify.py"


# Why: the data sets' raw downloads, each as its source declares it (icet.datasets): a file
# (AdvBench's CSV, SafeBench's questions), a zip unpacked (COCO, VQA-v2, FigStep's archive) or a
# Hub data set snapshot (JailbreakV-28K, XSTest); pinned and checksummed as the config says.
rule download_data:
    output:
        directory(f"{RES}/raw/{{download}}"),
    log:
        f"{LOGS}/download_data/{{download}}.log",
    wildcard_constraints:
        download="|".join(data_plan.downloads()),
    params:
        settings=lambda w: data_plan.download_settings(w.download, config["data"]),
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/download_data.py"
