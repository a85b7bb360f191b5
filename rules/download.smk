# Downloads: pinned revisions, safetensors and configs only, on the login node (local
# rules: compute nodes often have no internet). Each writes to a temporary folder and
# renames it when complete, so an interrupted download never looks finished.

localrules:
    download_model,
    download_judge,
    download_detoxify,
    download_advbench,
    download_jailbreakv,
    download_xstest,
    download_archive,


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


# Why: AdvBench's 520 harmful behaviours are the prompts of CP and AC.
rule download_advbench:
    output:
        f"{RES}/raw/advbench/harmful_behaviors.csv",
    log:
        f"{LOGS}/download_advbench/advbench.log",
    params:
        url=config["data"]["advbench"]["url"],
        sha256=config["data"]["advbench"].get("sha256"),
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/download_url.py"


# Why: JailbreakV-28K holds RedTeam-2K (L-PPO training) and the mini split (MR).
rule download_jailbreakv:
    output:
        directory(f"{RES}/raw/jailbreakv"),
    log:
        f"{LOGS}/download_jailbreakv/jailbreakv.log",
    params:
        repo=config["data"]["jailbreakv"]["repo"],
        revision=config["data"]["jailbreakv"]["revision"],
        repo_type="dataset",
        allow_patterns=["*.csv", "*.json", "*.md", "*.png", "*.jpg", "*.jpeg"],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/download_snapshot.py"


# Why: XSTest's safe prompts measure over-refusal.
rule download_xstest:
    output:
        directory(f"{RES}/raw/xstest"),
    log:
        f"{LOGS}/download_xstest/xstest.log",
    params:
        repo=config["data"]["xstest"]["repo"],
        revision=config["data"]["xstest"]["revision"],
        repo_type="dataset",
        allow_patterns=["*.csv", "*.json", "*.jsonl", "*.parquet", "*.md"],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/download_snapshot.py"


# Why: COCO images (AdvBench-COCO, CP's safe images) and VQA-v2 come as zip archives.
rule download_archive:
    output:
        directory(f"{RES}/raw/{{archive}}"),
    log:
        f"{LOGS}/download_archive/{{archive}}.log",
    wildcard_constraints:
        archive="coco|vqa_questions|vqa_annotations",
    params:
        url=lambda w: {
            "coco": config["data"]["coco"]["url"],
            "vqa_questions": config["data"]["vqa"]["questions_url"],
            "vqa_annotations": config["data"]["vqa"]["annotations_url"],
        }[w.archive],
        sha256=lambda w: {
            "coco": config["data"]["coco"].get("sha256"),
            "vqa_questions": config["data"]["vqa"].get("questions_sha256"),
            "vqa_annotations": config["data"]["vqa"].get("annotations_sha256"),
        }[w.archive],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/download_archive.py"
