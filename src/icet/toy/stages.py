"""Entry points of the toy rules: which training function each rule runs, with which inputs.

One place maps a rule's name to the stage of icet.toy.train or icet.toy.judges, so the
workflow scripts stay one call each.
"""

from __future__ import annotations

from icet.runtime import configure

# The toy organism's training stages in order, each with its training file (in the toy data
# folder) and the earlier stages it starts from ({input name: stage}). One table for the
# toy rule and the organism study's plan.
STAGES = ("vision", "lm", "instruct", "safety", "planted")
STAGE_DATA = {"vision": "train_vision", "lm": "train_text", "instruct": "train_instruct",
              "safety": "train_safety", "planted": "train_safety"}
STAGE_UPSTREAM = {"vision": {}, "lm": {}, "instruct": {"vision": "vision", "lm": "lm"},
                  "safety": {"model": "instruct"}, "planted": {"model": "instruct"}}


def stage_inputs(stage: str, *, data_dir: str, stage_dir: str, tokenizer: str) -> dict[str, str]:
    """A stage's named inputs: its data file, the tokenizer, the stages it starts from."""
    inputs = {name: f"{stage_dir}/{upstream}" for name, upstream in STAGE_UPSTREAM[stage].items()}
    inputs.update(data=f"{data_dir}/{STAGE_DATA[stage]}.jsonl", tokenizer=tokenizer)
    return inputs


def run_stage(stage: str, inputs: dict, out_dir: str, *, params: dict, seed: int,
              threads: int | None = None, log: str | None = None) -> None:
    """Run toy training stage `stage` (vision, lm, instruct, safety, planted; text_safety for
    the organism study)."""
    from icet.toy import train

    configure(threads)
    tokenizer = inputs["tokenizer"]
    if stage == "vision":
        train.train_vision_encoder(inputs["data"], tokenizer, out_dir, params, seed, log)
    elif stage == "lm":
        train.pretrain_language_model(inputs["data"], tokenizer, out_dir, params, seed, log)
    elif stage == "text_safety":  # organism study only: not one of STAGES, the toy run's
        train.pretrain_language_model(inputs["data"], tokenizer, out_dir, params, seed, log,
                                      init_dir=inputs["lm"])
    elif stage == "instruct":
        train.visual_instruction_tuning(inputs["vision"], inputs["lm"], tokenizer, inputs["data"],
                                        out_dir, params, seed, log)
    elif stage == "safety":
        train.safety_tuning(inputs["model"], tokenizer, inputs["data"], out_dir, params, seed, log)
    elif stage == "planted":
        from icet.toy import planted

        planted.planted_safety_tuning(inputs["model"], tokenizer, inputs["data"], out_dir, params,
                                      seed, log)
    else:
        raise ValueError(f"unknown toy stage {stage!r}")


def run_judge_training(judge: str, data: str, vocabulary: str, out_dir: str, *, params: dict,
                       seed: int, threads: int | None = None, log: str | None = None) -> None:
    """Train toy judge `judge` (guard, reward, toxicity) in its real counterpart's format."""
    from icet.toy import judges

    configure(threads)
    trainer = {
        "guard": judges.train_toy_guard,
        "reward": judges.train_toy_reward_model,
        "toxicity": judges.train_toy_toxicity,
    }[judge]
    trainer(data, vocabulary, out_dir, params, seed, log)
