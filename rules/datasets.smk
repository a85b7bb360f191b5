# Data set builders: every set becomes a JSONL of rows with stable ids (docs/contracts.md).
# A missing or unreadable image, an empty or duplicated id or a malformed row stops the
# build with one line naming the file and row. (The toy's sets: rules/toy.smk.)


# Why: CP = 10 AdvBench prompts x 10 safe images; AC = the other 510, each a random COCO image.
rule build_advbench:
    input:
        advbench=f"{RES}/raw/advbench/harmful_behaviors.csv",
        coco=f"{RES}/raw/coco",
    output:
        cp=f"{RES}/paper/advbench/cp.jsonl",
        ac=f"{RES}/paper/advbench/ac.jsonl",
    log:
        f"{LOGS}/build_advbench/advbench.log",
    params:
        seed=config["seed"],
        cp_prompts=config["data"]["sizes"]["cp_prompts"],
        cp_images=config["data"]["sizes"]["cp_images"],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/build_advbench.py"


# Why: RT (RedTeam-2K, L-PPO training) and MR (miniJailbreak-V28K, 280 rows). It also checks
# every image both need and names what is missing and how to get it; every sweep waits for it
# (data_gate), so that line comes before any GPU job.
rule build_jailbreakv:
    input:
        unpack(jailbreakv_inputs),
    output:
        rt=f"{RES}/paper/jailbreakv/rt.jsonl",
        mr=f"{RES}/paper/jailbreakv/mr.jsonl",
    log:
        f"{LOGS}/build_jailbreakv/jailbreakv.log",
    params:
        seed=config["seed"],
        rt_size=config["data"]["sizes"]["rt"],
        images_dir=JBV["images_dir"],
        rt_images=JBV["rt_images"],
        mr_missing_images=JBV["mr_missing_images"],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/build_jailbreakv.py"


# Why: a seeded VQA-v2 subset measures utility (Table 3).
rule build_vqa:
    input:
        questions=f"{RES}/raw/vqa_questions",
        annotations=f"{RES}/raw/vqa_annotations",
        images=f"{RES}/raw/coco",
    output:
        f"{RES}/paper/vqa/vqa.jsonl",
    log:
        f"{LOGS}/build_vqa/vqa.log",
    params:
        seed=config["seed"],
        size=config["data"]["sizes"]["vqa"],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/build_vqa.py"


# Why: XSTest's safe prompts that look harmful measure over-refusal.
rule build_xstest:
    input:
        xstest=f"{RES}/raw/xstest",
        images=f"{RES}/raw/coco",
    output:
        f"{RES}/paper/xstest/xstest.jsonl",
    log:
        f"{LOGS}/build_xstest/xstest.log",
    params:
        seed=config["seed"],
    conda:
        "../envs/download.yaml"
    script:
        "../workflow_scripts/build_xstest.py"
