# The toy's input functions, paths and wildcard constraints (its rules: rules/toy.smk). No
# rules here. Only a toy run (data_source: toy) includes the two (the Snakefile): they are
# the toy's one door into the workflow, and no other rule file or library module outside
# icet.toy imports the toy.

from icet.toy import settings as toy_settings
from icet.toy.stages import STAGES as TOY_STAGES, stage_inputs

TOY = config.get("toy", {})
TOY_ARCH = TOY.get("arch", {})
TOY_STAGE_PARAMS = TOY.get("stages", {})
TOY_JUDGE_PARAMS = TOY.get("judges", {})
TOY_DATA_FILES = ["rt", "cp", "mr", "ac", "vqa", "xstest", "train_vision", "train_text",
                  "train_instruct", "train_safety", "train_guard", "train_reward",
                  "train_toxicity"]
# The toy judge folders this config's toy-sourced judges are served by.
TOY_JUDGES = sorted({cls.toy for name, cls in JUDGES.items()
                     if config["judges"][name].get("source") == "toy"})
TOY_JUDGE_PATTERN = "|".join(TOY_JUDGES) or "none"
PLANTED_PATTERN = "|".join(map(re.escape, PLANTED_MODELS)) or "none"
# The toy organism's chain (tokenizer, then each training stage, then the sweeps) is the
# DAG's critical path; the toy judges are needed only when scoring starts. Without it the
# scheduler may start all three judges first and hold the chain back (~10 % of make toy).
TOY_ORGANISM_PRIORITY = 10


wildcard_constraints:
    stage="|".join(TOY_STAGES),


def toy_stage_inputs(wildcards):
    """A toy training stage's data file, tokenizer and the stages it starts from."""
    return stage_inputs(wildcards.stage, data_dir=f"{RES}/toy/data",
                        stage_dir=f"{RES}/toy/organism", tokenizer=f"{RES}/toy/tokenizer")


def toy_stage_params(stage):
    """A toy stage's hyperparameters (toy.stages.<stage>) with the toy's architecture."""
    return {**TOY_STAGE_PARAMS.get(stage, {}), "arch": TOY_ARCH}


def toy_organism_outputs():
    return [f"{RES}/toy/organism/{s}" for s in TOY_STAGES] + [
        f"{RES}/toy/judges/{j}" for j in TOY_JUDGES]
