"""Each GPU rule's jobs, sized by the memory model from a run config: the table `icet memory`
prints, the `gpu_mem_mb` floor the rules ask for, and the check a job runs before loading.

The model's config.json comes from its folder when downloaded, else from icet.memory.paper
(the real values, cited there). What only the data can tell (how long the longest prompt is)
takes a stated bound here; the job itself plans with the real figure once its data and
tokenizer are at hand (icet.engine.plan_batch). Torch-free: the workflow calls it at parse time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from icet.errors import IcetError
from icet.memory.arch import Arch, arch_of
from icet.memory.model import (GB, Estimate, judge_estimate, lppo_estimate, sweep_estimate,
                               sweep_plan, weight_bytes)

# Text tokens of the longest prompt the table assumes (chat template included): MR's
# jailbreak prompts run from ~30 to over 1,000 tokens; RedTeam-2K's L-PPO prompts are one
# question each. The jobs measure the real ones.
SWEEP_PROMPT_TOKENS = 1200
LPPO_PROMPT_TOKENS = 160
# Llama Guard 3's template is ~400 tokens around the prompt and the response; HarmBench's
# ~250 around the behavior and the generation (clipped to max_generation_tokens).
GUARD_TEMPLATE_TOKENS = 400
HARMBENCH_TEMPLATE_TOKENS = 250
BERT_MAX_POSITIONS = 512  # Detoxify's tokenizer truncates there
CUDA_CONTEXT = 1 * GB  # CUDA context, cuBLAS workspace: resident before any tensor
MEMORY_SHARE = 0.85  # icet.engine.MEMORY_SHARE: the share of free memory "auto" plans to fill
JUDGE_PRECISION = {"guard": 2, "harmbench": 2}  # bf16 on a GPU; the others fp32 (judges.base)
JUDGE_CONFIGS = {"toxicity": "google-bert/bert-base-uncased"}  # not a Hub snapshot of its own
# Common data-centre GPU memory sizes (GB): the table names the smallest that holds a job.
CARDS_GB = (16, 24, 40, 48, 80, 94, 141)


@dataclass
class Job:
    """One rule's job kind: its predicted peak (and floor, where the job adapts) in bytes."""

    rule: str
    name: str
    estimate: Estimate
    card_gb: float  # the GPU memory it is planned for (resources.gpu_memory_gb)
    floor: int  # the least it can run in (the sweep adapts its batch down to one row)
    detail: str = ""

    @property
    def peak(self) -> int:
        return self.estimate.peak

    @property
    def fits(self) -> bool:
        return self.peak + CUDA_CONTEXT <= self.card_gb * GB

    @property
    def smallest_card(self) -> int | None:
        """The smallest common card (CARDS_GB) that holds the job's floor, or None."""
        return next((gb for gb in CARDS_GB if self.floor + CUDA_CONTEXT <= gb * GB), None)


def folder_config(folder: str | Path | None) -> dict[str, Any] | None:
    """config.json of a model folder, if there is one."""
    path = Path(folder) / "config.json" if folder else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def config_for(repo: str | None, folder: str | Path | None) -> dict[str, Any] | None:
    """A folder's config.json, else the paper's values for `repo`, else None (unknown)."""
    from icet.memory.paper import CONFIGS, config_of

    found = folder_config(folder)
    if found is not None:
        return found
    return config_of(repo) if repo in CONFIGS else None


def sweep_job(name: str, arch: Arch, config: Mapping[str, Any], card_gb: float,
              prompt_tokens: int = SWEEP_PROMPT_TOKENS) -> Job:
    """A sweep job of this model at `auto` on a card of `card_gb`: the plan for its longest row."""
    positions = prompt_tokens - 1 + arch.image_positions
    new = int(config["generation"]["max_new_tokens"])
    layers = int(config["sweep"]["layers_per_job"] or 1)
    weights = weight_bytes(arch, 2)
    budget = int((card_gb * GB - CUDA_CONTEXT - weights) * MEMORY_SHARE)
    floor = sweep_estimate(arch, rows=1, vision_batch=1, prompt_positions=positions,
                           max_new_tokens=new, layers=1, what=name).peak
    try:
        plan = sweep_plan(arch, budget=budget, prompt_positions=positions, max_new_tokens=new,
                          n_prompts=1000, layers=layers, dtype_bytes=2, where=name)
    except IcetError:  # not even one row: the floor is the figure
        estimate = sweep_estimate(arch, rows=1, vision_batch=1, prompt_positions=positions,
                                  max_new_tokens=new, layers=1, what=name)
        return Job("sweep_shard", name, estimate, card_gb, floor, "does not fit one row")
    estimate = sweep_estimate(arch, rows=plan.rows, vision_batch=plan.vision_batch,
                              prompt_positions=positions, max_new_tokens=new, layers=plan.group,
                              what=name)
    return Job("sweep_shard", name, estimate, card_gb, floor,
               f"auto: {plan.rows} rows, vision {plan.vision_batch} images at a time, "
               f"{positions}+{new} positions")


def lppo_jobs(name: str, arch: Arch, config: Mapping[str, Any], reward: Arch | None,
              card_gb: float) -> list[Job]:
    """L-PPO as configured, and with gradient checkpointing switched the other way."""
    from icet.lppo.config import fill_lppo

    params = fill_lppo(dict(config["lppo"]))
    judge = config["judges"].get("reward") or {}
    batch = int(params.get("reward_batch_size") or judge.get("batch_size") or 16)
    length = int(params.get("reward_max_length") or judge.get("max_length") or 512)
    positions = LPPO_PROMPT_TOKENS - 1 + arch.image_positions
    jobs = []
    for checkpointing in (bool(params["gradient_checkpointing"]), not params["gradient_checkpointing"]):
        estimate = lppo_estimate(arch, params, prompt_positions=positions, reward=reward,
                                 reward_batch=batch, reward_length=length,
                                 checkpointing=checkpointing, what=name)
        micro = estimate.notes["micro_batch"]
        configured = checkpointing == bool(params["gradient_checkpointing"])
        jobs.append(Job("lppo_train", f"{name}{'' if configured else ' (alternative)'}", estimate,
                        card_gb, estimate.peak,
                        f"{'with' if checkpointing else 'no'} gradient checkpointing, micro-batch "
                        f"{micro} x {positions}+{params['max_new_tokens']} positions, rollout "
                        f"{params['rollout_batch']} rows"))
    return jobs


def judge_job(judge: str, arch: Arch, spec: Mapping[str, Any], rule: str, card_gb: float,
              new: int = 128) -> Job:
    """A judge's scoring job: its batches at the longest prompt (SWEEP_PROMPT_TOKENS) and a
    response of `new` tokens (generation.max_new_tokens)."""
    b = JUDGE_PRECISION.get(judge, 4)
    if judge == "guard":
        rows, positions = spec["batch_size"], GUARD_TEMPLATE_TOKENS + SWEEP_PROMPT_TOKENS + new
        new_tokens = spec["max_new_tokens"]
    elif judge == "harmbench":
        rows = spec["batch_size"]
        positions, new_tokens = HARMBENCH_TEMPLATE_TOKENS + 200 + spec["max_generation_tokens"], 1
    else:
        rows, new_tokens = spec["batch_size"], 0
        positions = spec.get("max_length") or BERT_MAX_POSITIONS
    estimate = judge_estimate(arch, rows=int(rows), positions=int(positions), new_tokens=int(new_tokens),
                              b=b, what=judge)
    return Job(rule, judge, estimate, card_gb, estimate.peak,
               f"batch {rows} x {positions}{f'+{new_tokens}' if new_tokens else ''} positions, "
               f"{'bf16' if b == 2 else 'fp32'}")


def known_arch(config: Mapping[str, Any] | None) -> Arch | None:
    """The Arch of a config the memory model knows, else None (e.g. Qwen2.5-VL: no plan, no
    floor; the workflow must not stop over a model it cannot size)."""
    if not config:
        return None
    try:
        return arch_of(config)
    except IcetError:
        return None


def judge_arch(judge: str, spec: Mapping[str, Any], folder: str | Path | None) -> Arch | None:
    if judge in JUDGE_CONFIGS:
        found = folder_config(Path(folder) / "config" if folder else None)
        config = found or config_for(JUDGE_CONFIGS[judge], None)
    else:
        config = config_for(spec.get("repo"), folder)
    return known_arch(config)


def run_jobs(config: Mapping[str, Any], model_dirs: Mapping[str, str | None],
             judge_dirs: Mapping[str, str | None]) -> list[Job]:
    """Every GPU job kind of a (schema-filled) run config, with its predicted peak."""
    from icet.judges.base import SCORED_ROLES, named

    jobs: list[Job] = []
    reward_spec = config["judges"].get("reward") or {}
    reward_arch = judge_arch("reward", reward_spec, judge_dirs.get("reward")) if reward_spec else None
    for model in config["models"]:
        resources = model["resources"]
        if not resources.get("gpu"):
            continue
        arch = known_arch(config_for(model.get("repo"), model_dirs.get(model["name"])))
        if arch is None:
            continue
        card = float(resources.get("gpu_memory_gb", 80))
        jobs.append(sweep_job(model["name"], arch, config, card))
        if model.get("lppo"):
            jobs.extend(lppo_jobs(model["name"], arch, config, reward_arch, card))
    scoring = config["scoring_resources"]
    for cls in named(config["judges"], SCORED_ROLES + ("utility",)):
        spec = config["judges"][cls.name]
        rule, block = (("score_utility", scoring["utility"]) if cls.role == "utility"
                       else ("score_testset", scoring["safety"]))
        if cls.download is None or not block.get("gpu") or spec.get("source") == "toy":
            continue
        arch = judge_arch(cls.name, spec, judge_dirs.get(cls.name))
        if arch is not None:
            jobs.append(judge_job(cls.name, arch, spec, rule, float(block.get("gpu_memory_gb", 80)),
                                  int(config["generation"]["max_new_tokens"])))
    return jobs


def rule_floor_mb(jobs: list[Job], rule: str, name: str | None = None) -> int | None:
    """The GPU memory (MB) a rule's job needs at least: the sweep's one-row floor, L-PPO's
    configured peak, the largest judge of a scoring rule (they load one at a time)."""
    picked = [j for j in jobs if j.rule == rule and (name is None or j.name == name)]
    if not picked:
        return None
    return int((max(j.floor for j in picked) + CUDA_CONTEXT) // 10 ** 6)


def table(jobs: list[Job]) -> str:
    """The memory table, one line per job, as `icet memory` prints it."""
    lines = [f"{'rule':<14} {'job':<28} {'peak GB':>8} {'floor GB':>9} {'card GB':>8} {'fits':>5} "
             f"{'needs':>6}  peak phase; plan",
             "-" * 128]
    for job in jobs:
        context = CUDA_CONTEXT / GB
        needs = f"{job.smallest_card} GB" if job.smallest_card else "-"
        lines.append(f"{job.rule:<14} {job.name:<28} {job.peak / GB + context:>8.1f} "
                     f"{job.floor / GB + context:>9.1f} {job.card_gb:>8.0f} "
                     f"{'yes' if job.fits else 'NO':>5} {needs:>6}  {job.estimate.peak_phase.name}; "
                     f"{job.detail}")
    return "\n".join(lines)


def check_judge_fits(judge: str, spec: Mapping[str, Any], device: str) -> None:
    """Before a judge loads: one line if its predicted peak exceeds the GPU's free memory."""
    if not str(device).startswith("cuda"):
        return
    arch = judge_arch(judge, spec, spec.get("path"))
    if arch is not None:
        job = judge_job(judge, arch, spec, "score", 0.0)
        check_fits(job.estimate, device, hint=f"judges.{judge}.batch_size sizes its batches")


def gpu_arch(model_dir: str | Path, device: str) -> Arch | None:
    """The Arch of a model folder for a job on a GPU; None on a CPU or without config.json."""
    return known_arch(folder_config(model_dir)) if str(device).startswith("cuda") else None


def check_sweep_fits(model_dir: str | Path, config_max_new_tokens: int, device: str, what: str) -> None:
    """Before a sweep job loads its model: one line if even one row of the longest prompt the
    table assumes (SWEEP_PROMPT_TOKENS) does not fit the GPU's free memory."""
    arch = gpu_arch(model_dir, device)
    if arch is None:
        return
    estimate = sweep_estimate(arch, rows=1, vision_batch=1,
                              prompt_positions=SWEEP_PROMPT_TOKENS - 1 + arch.image_positions,
                              max_new_tokens=config_max_new_tokens, layers=1, what=what)
    check_fits(estimate, device)


def check_lppo_fits(model_dir: str | Path, params: Mapping[str, Any], reward_dir: str | None,
                    device: str, what: str = "L-PPO") -> None:
    """Before L-PPO loads its model: one line if a step as configured needs more than the GPU
    has free, saying which settings shrink it."""
    arch = gpu_arch(model_dir, device)
    if arch is None:
        return
    estimate = lppo_estimate(arch, dict(params), prompt_positions=LPPO_PROMPT_TOKENS - 1 + arch.image_positions,
                             reward=known_arch(folder_config(reward_dir)),
                             reward_batch=int(params.get("reward_batch_size") or 16),
                             reward_length=int(params.get("reward_max_length") or 512), what=what)
    check_fits(estimate, device, hint="lppo.gradient_checkpointing: true or a larger lppo.grad_accum "
                                      "shrinks the update")


def check_fits(estimate: Estimate, device: str, *, hint: str = "") -> None:
    """Before a job loads its model: one line naming the figures when the predicted need is
    more than the GPU has free. A CPU job is not checked (host memory is SLURM's mem_mb)."""
    if not str(device).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        return
    free, total = torch.cuda.mem_get_info(torch.device(device))
    if estimate.peak > free:
        name = torch.cuda.get_device_name(torch.device(device))
        raise IcetError(f"{estimate.describe()}; {name} has {free / GB:.1f} GB free of "
                        f"{total / GB:.1f} GB (icet memory){'; ' + hint if hint else ''}")


def folders_of(config: Mapping[str, Any]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Where the workflow puts each model's and judge's folder (rules/common.smk model_dir
    and judge_path), for `icet memory` outside Snakemake; a toy judge has none here."""
    res = config["resources_dir"]
    models: dict[str, str | None] = {}
    for model in config["models"]:
        source = model.get("source")
        models[model["name"]] = (f"{res}/models/{model['name']}" if source == "hub" else
                                 model.get("path") if source == "local" else
                                 f"{res}/toy/organism/{model.get('stage')}")
    judges: dict[str, str | None] = {}
    for name, spec in config["judges"].items():
        if isinstance(spec, dict) and spec.get("source") in ("hub", "local"):
            judges[name] = f"{res}/judges/{name}" if spec["source"] == "hub" else spec.get("path")
    return models, judges
