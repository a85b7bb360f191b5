# Shared input functions, paths and wildcard constraints. No rules here.

import re
import sys
from pathlib import Path

# The library lives in src/ and is installed into every job's environment (pip install -e,
# or the `-e ..` line of envs/*.yaml); this path only serves the parsing of this workflow.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from icet.command_line import command_line_config, profile_configfiles, swallowed_targets
from icet.config import (check_config, merge, model_layers, prompting_of, split_tuning,
                         typed_overrides, utility_reward_settings)
from icet.datasets import plan as data_plan
from icet.errors import IcetError
from icet.judges.base import SCORED_ROLES, named as named_judges
from icet.lppo.launch import processes_for
from icet.models import registry
from icet.shards import code_hash
from icet.redact import drop_from_environment
from icet.runtime import job_device

# A cluster job (Snakemake's remote mode, e.g. a SLURM job) never downloads: downloads are
# local rules. The executor exported the whole environment to it (sbatch --export=ALL);
# drop the Hub token before any rule's process starts (icet.redact).
if workflow.remote_exec:
    drop_from_environment()
from icet.timing import print_time_table
from icet.report.summary import print_checks
from icet.ground_truth import PLANTED_LABEL

# A profile's own config files (the toy profile's toy/toy.yaml) stay under a user's
# --configfile, which Snakemake lets replace them (icet.command_line): the config is built
# as if they had been named first on the command line, and they are put first in its list,
# which Snakemake hands every cluster job (spawn_jobs: --configfiles).
if not workflow.remote_exec:
    _profile_files = profile_configfiles(sys.argv, workflow.basedir, workflow.overwrite_configfiles)
    if _profile_files:
        workflow.overwrite_configfiles[:0] = _profile_files
        _config = command_line_config(Path(workflow.basedir) / "config.yaml",
                                      workflow.overwrite_configfiles,
                                      dict(workflow.config_settings.config))
        config.clear()
        config.update(_config)

# Nested --config values arrive as strings from Snakemake; give them the schema's types.
config.update(merge(config, typed_overrides(dict(workflow.config_settings.config))))

# Validate before anything is scheduled: one line naming the key, non-zero exit.
try:
    config.update(check_config(dict(config), source="config"))
except IcetError as err:
    sys.exit(f"icet: config error: {err}")

# What defines a job's result, apart from what only tunes its speed, memory or placement
# (schema keys marked x-tuning: batch sizes, the sweep engine, the device). Rules take the
# first as params, which rerun a job when they change, and the second through `tuning`.
RESULT_CONFIG, TUNING_CONFIG = split_tuning(config)


def tuning(values):
    """A rule's `tuning` param: speed, memory and placement knobs (`values`, or a function of
    the wildcards giving them). Snakemake's params trigger skips a param computed from the
    job's resources (a "derived" param: snakemake.rules.Rule._is_deriving_function,
    snakemake.persistence._params), so changing a batch size reruns nothing: a finished
    L-PPO run is never thrown away for one."""

    def of_job(wildcards, resources):
        return values(wildcards) if callable(values) else values

    return of_job


RUN = f"results/{config['run']}"
LOGS = f"logs/{config['run']}"
RES = config["resources_dir"]
MODELS = {m["name"]: m for m in config["models"]}
# The run's sets (icet.datasets.plan): safety and utility sets are swept, the train set trains.
# A toy run (toy/toy.yaml) also includes rules/toy_common.smk and rules/toy.smk, which hold
# the toy's rules (the Snakefile). Here a toy run reads only the toy's list of the paper sets
# it builds a version of, so a set it lacks (SafeBench) is left out; a paper run imports
# nothing of the toy (tests/workflow/test_workflow.py parses it with icet.toy unimportable).
IS_TOY = config["data_source"] == "toy"
if IS_TOY:
    from icet.toy.datasets import TEST_SETS as TOY_SETS
SETS = data_plan.run_sets(config, available=TOY_SETS if IS_TOY else None)
SAFETY_SETS = SETS.safety
UTILITY_SETS = SETS.utility
ALL_SETS = SETS.swept
# The judge plug-ins this config names (icet.judges.base), in registry order; the workflow
# loops over these, so a new judge needs no edit here.
JUDGES = {cls.name: cls for cls in named_judges(config["judges"])}
# A sweep job's param: with the `params` rerun trigger, a change to the library code that
# writes shards (icet.shards.SWEEP_CODE) reruns the sweep jobs, whose shard fingerprints
# then recompute every shard (docs/running.md, "What triggers a rerun").
SWEEP_CODE_HASH = code_hash()


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)) if MODELS else "none",
    testset="[a-z]+",
    variant="original|aligned",
    chunk="[0-9]+",
    judge="[a-z_]+",


def check_command_line(target_rules):
    """Stop with one line if a target rule was given after --forcerun/-R (the Snakefile calls
    this once every rule is declared)."""
    swallowed = [] if workflow.remote_exec else swallowed_targets(sys.argv, target_rules)
    if swallowed:
        sys.exit(f"icet: command line: {', '.join(swallowed)} after --forcerun/-R is read as a "
                 f"rule to force, not a target (that option takes every word after it); put "
                 f"targets first: snakemake {' '.join(swallowed)} --forcerun ...")


# ---- models and judges -------------------------------------------------------------------


def model_dir(name):
    """Folder of a model's weights, wherever they come from."""
    model = MODELS[name]
    if model["source"] == "hub":
        return f"{RES}/models/{name}"
    if model["source"] == "local":
        return model["path"]
    return f"{RES}/toy/organism/{model['stage']}"


def model_resources(name, key):
    return MODELS[name]["resources"][key]


def model_device(name):
    """The device a model's jobs run on: the config's choice, checked against its GPUs."""
    return job_device(config["device"], model_resources(name, "gpu"))


def sweep_inputs(wildcards):
    """A sweep job's inputs: the model, its data set and the data gate; the aligned variant
    also the model's L-PPO adapter."""
    inputs = {"model": model_dir(wildcards.model), "data": dataset(wildcards.testset),
              "gate": data_gate()}
    if wildcards.variant == "aligned":
        inputs["adapter"] = f"{RUN}/lppo/{wildcards.model}/adapter"
    return inputs


def prompt_suffix(testset):
    """Text appended to every prompt of a test set (config prompt_suffix; none if unset)."""
    return config["prompt_suffix"].get(testset, "")


def lppo_processes(name):
    """L-PPO trainer processes for a model: one per GPU unless resources.processes says."""
    return processes_for(MODELS[name]["resources"])


def lppo_seed():
    """L-PPO's seed: its own (config lppo.seed), else the run's."""
    seed = config["lppo"].get("seed")
    return config["seed"] if seed is None else seed


def lppo_params(name):
    """A model's L-PPO hyperparameters (icet.lppo.config.LppoParams): the lppo block less its
    seed (the rule's `seed`), plus the model's layer groups."""
    return {**{k: v for k, v in RESULT_CONFIG["lppo"].items() if k != "seed"},
            "groups": MODELS[name]["groups"]}


def lppo_models():
    return [m for m, spec in MODELS.items() if spec.get("lppo")]


def judge_spec(judge):
    return config["judges"][judge]


def judge_folders():
    """Every judge that has a folder (a model), by name."""
    return {j: judge_path(j) for j, cls in JUDGES.items() if cls.download is not None}


def judge_path(judge):
    """Folder of a judge: downloaded, local, or the toy judge trained here (the plug-in's
    `toy` names it: the toy's one reward model serves as the utility reward model too)."""
    spec = judge_spec(judge)
    if spec["source"] == "local":
        return spec["path"]
    if spec["source"] == "toy":
        return f"{RES}/toy/judges/{JUDGES[judge].toy}"
    return f"{RES}/judges/{judge}"


# Download-only keys: where a judge comes from, not how it scores.
SOURCE_KEYS = ("source", "repo", "revision", "checkpoint_url", "config_repo")


def judges_for_scoring():
    """The judges' blocks passed to icet.score, with each model judge's folder as `path`,
    without their tuning keys (batch sizes: `judge_batch_sizes`)."""
    out = {}
    for judge, cls in JUDGES.items():
        if cls.role in SCORED_ROLES:
            out[judge] = {k: v for k, v in RESULT_CONFIG["judges"][judge].items()
                          if k not in SOURCE_KEYS}
            if cls.download is not None:
                out[judge]["path"] = judge_path(judge)
    return out


# ---- GPU memory (icet.memory) ------------------------------------------------------------

# Every GPU job kind's predicted peak from its model's config.json (the downloaded one, else
# the real values in icet.memory.paper; torch-free): the `gpu_mem_mb` floor each GPU rule
# asks for. `python -m icet memory config.yaml` prints them all beside the card they plan for.
from icet.memory.jobs import rule_floor_mb, run_jobs

GPU_JOBS = run_jobs(config, {m: model_dir(m) for m in MODELS}, judge_folders())


def gpu_floor_mb(rule, name=None):
    """GPU memory (MB) a rule's job needs at least, or None where the model is unknown."""
    return rule_floor_mb(GPU_JOBS, rule, name)


def gpu_placement(block, key):
    """SLURM placement of a GPU job (`key` of its resources block): one node, and the GPU
    type (sbatch --gpus=<type>:N) and node features (-C) the config names; None = unset,
    which Snakemake leaves out of the job's resources."""
    return {"nodes": 1, "gpu_model": block.get("gpu_model"), "constraint": block.get("constraint")}[key]


def scoring_resources(block, rule):
    """A scoring rule's resources: its config block's, its placement and its memory floor."""
    resources = {k: block[k] for k in ("gpu", "mem_mb", "runtime")}
    resources.update({k: gpu_placement(block, k) for k in ("nodes", "gpu_model", "constraint")})
    resources["gpu_mem_mb"] = gpu_floor_mb(rule)
    return {k: v for k, v in resources.items() if v is not None}


def judge_batch_sizes():
    """Each scoring judge's batch size (a tuning key): {judge: batch_size}."""
    return {judge: spec["batch_size"] for judge, spec in TUNING_CONFIG.get("judges", {}).items()
            if judge in judges_for_scoring() and "batch_size" in spec}


def judge_name(judge):
    """How captions name a judge: its Hub repository, its local folder, the toy judge, or
    (Detoxify, keywords) the plug-in's title."""
    spec, cls = judge_spec(judge), JUDGES[judge]
    if cls.download is None:
        return cls.title
    if spec["source"] == "toy":
        return f"toy {cls.toy}"
    if spec["source"] == "local":
        return spec["path"]
    return cls.title if cls.download == "detoxify" else spec["repo"]


def judge_names():
    """Every judge with a model (a folder), by its caption name."""
    return {j: judge_name(j) for j, cls in JUDGES.items() if cls.download is not None}


def judge_inputs():
    """The folders of the judges rule score_testset runs."""
    return sorted({judge_path(j) for j, cls in JUDGES.items()
                   if cls.role in SCORED_ROLES and cls.download is not None})


def download_paths():
    """Every download this config makes (Hub snapshots, URL files and archives): their
    records go into the manifest and the summary's provenance warnings (icet.provenance)."""
    paths = [f"{RES}/models/{m}" for m, spec in MODELS.items() if spec["source"] == "hub"]
    paths += [f"{RES}/judges/{j}" for j, cls in JUDGES.items()
              if cls.download is not None and judge_spec(j).get("source") == "hub"]
    if not IS_TOY:
        paths += data_plan.download_records(SETS.built, config["data"], RES)
    return paths


# ---- data and outputs --------------------------------------------------------------------


def dataset(testset):
    """A set's JSONL: the toy's, or the paper source's folder (icet.datasets.plan)."""
    if IS_TOY:
        return f"{RES}/toy/data/{testset}.jsonl"
    return data_plan.dataset_path(RES, testset)


def all_datasets():
    return [dataset(s) for s in SETS.built]


JBV = config["data"]["jailbreakv"]


def data_gate():
    """What every sweep waits for: the builds that check images a user fetches by hand
    (JailbreakV-28K's: one line naming the missing ones and how to get them, before any GPU
    job; a source's `gate`)."""
    return [] if IS_TOY else data_plan.gate(SETS.built, RES)


def paper_builds():
    """build.json of every paper data set folder (the seeded choices and counts behind it)."""
    if IS_TOY:
        return []
    return sorted({str(Path(dataset(s)).parent / "build.json") for s in SETS.built})


def layer_chunks(model):
    """The model's ICET layers in job-sized chunks (sweep.layers_per_job; 0 = all in one)."""
    layers = model_layers(MODELS[model])
    size = config["sweep"]["layers_per_job"] or len(layers)
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def chunk_layers(model, chunk):
    return layer_chunks(model)[int(chunk)]


def sweep_index(model, variant, testset, chunk):
    """A sweep job's declared output: the index of its per-layer shards (icet.shards)."""
    return f"{RUN}/sweep/{model}/{variant}/{testset}/chunk-{int(chunk):02d}.json"


def sweep_indexes(model, variant, testset):
    return [sweep_index(model, variant, testset, c) for c in range(len(layer_chunks(model)))]


def variants(model):
    return ["original", "aligned"] if MODELS[model].get("lppo") else ["original"]


def sweep_outputs(variant):
    return [f for m in MODELS if variant in variants(m) for s in ALL_SETS
            for f in sweep_indexes(m, variant, s)]


def score_file(model, variant, testset):
    return f"{RUN}/scores/{model}/{variant}/{testset}.jsonl"


def score_outputs(variant):
    return [score_file(m, variant, s) for m in MODELS if variant in variants(m) for s in ALL_SETS]


def all_score_files():
    return score_outputs("original") + score_outputs("aligned")


def lppo_outputs():
    return [f"{RUN}/lppo/{m}/adapter" for m in lppo_models()]


def learning_outputs():
    """L-PPO's learning check per model (target `learning`; not part of `all`)."""
    return [f"{RUN}/lppo/{m}/learning.md" for m in lppo_models()]


def table_outputs():
    tables = ["table2", "table3", "layers", "utility", "agreement"] + [e for e in EXHIBITS if e != "figure1"]
    return [f"{RUN}/tables/{t}.{ext}" for t in tables for ext in ("csv", "md", "tex")]


def figure_outputs():
    figs = ["figure3"] + (["figure1"] if "figure1" in EXHIBITS else [])
    figs += [f"layers-{m}" for m in MODELS] + [f"lppo-{m}" for m in lppo_models()]
    return [f"{RUN}/figures/{f}.{ext}" for f in figs for ext in ("png", "pdf")]


def final_outputs():
    return table_outputs() + figure_outputs() + [
        f"{RUN}/summary.md", f"{RUN}/reproduction.md", f"{RUN}/manifest.json"]


# ---- reports -----------------------------------------------------------------------------


def safety_scores(model=None):
    files = [f for f in all_score_files() if Path(f).stem in SAFETY_SETS]
    return [f for f in files if model is None or f.startswith(f"{RUN}/scores/{model}/")]


def utility_score_files(testset):
    """Every model x variant's scores of a utility set (VQA: the utility judge's file)."""
    if testset not in UTILITY_SETS:
        return []
    files = [score_file(m, v, testset) for m in MODELS for v in variants(m)]
    return [str(Path(f).with_suffix(".utility.jsonl")) for f in files] if testset == "vqa" else files


def planted_score_files():
    """The planted controls' safety scores: ground truth for detection and repair."""
    return [f for m in PLANTED_MODELS for f in safety_scores(m)]


def planted_truth():
    """Per planted control, its ground truth files (icet.ground_truth), written by rule
    planted_truth (rules/toy.smk): {model: {"spec": ..., "truth": ...}}."""
    return {m: {"spec": f"{RUN}/planted/{m}/spec.json", "truth": f"{RUN}/planted/{m}/truth.jsonl"}
            for m in PLANTED_MODELS}


def planted_truth_files():
    return [path for files in planted_truth().values() for path in files.values()]


def lppo_metric_files():
    return {m: f"{RUN}/lppo/{m}/metrics.csv" for m in lppo_models()}


def layer_counts():
    return {m: MODELS[m]["num_layers"] for m in MODELS}


def model_dirs():
    return [model_dir(m) for m in MODELS]


def all_sweep_outputs():
    return sweep_outputs("original") + sweep_outputs("aligned")


def manifest_results():
    """Every result the manifest hashes: tables, figures, the two reports, the scores."""
    return (table_outputs() + figure_outputs() + [f"{RUN}/summary.md", f"{RUN}/reproduction.md"]
            + all_score_files() + planted_truth_files())


def toy_reward_card():
    """The toy reward model's judge.json (held-out accuracy per pair type), else None."""
    return f"{judge_path('reward')}/judge.json" if judge_spec("reward")["source"] == "toy" else None


def figure_caption(model):
    """What a per-layer figure's caption names: judge, seed, model and run label; "planted
    (positive control)" only on a planted model's figure (the run's caption label names the
    planted models, which on another model's figure reads as its title)."""
    from icet.report.exhibits import model_label

    return {"judge": judge_name("guard"), "seed": config["seed"], "model": model,
            "label": model_label(config["report"]["label"], model, PLANTED_MODELS)}


# Table 2 and Figure 3 are the paper's for LLaVA-1.5, its L-PPO model: ours is the first
# model with lppo: true (else the first model).
MAIN_MODEL = (lppo_models() or list(MODELS))[0]

# The qualitative exhibits (report.examples), resolved for this run's models and layers
# (icet.report.examples: paper layers scaled, a missing model -> MAIN_MODEL).
from icet.report.exhibits import exhibits as _exhibits

EXHIBITS = _exhibits(config["report"]["examples"], MODELS, MAIN_MODEL,
                     {m: model_layers(MODELS[m]) for m in MODELS})
# The exhibits that are tables (table_examples' wildcard), or a pattern nothing matches.
EXHIBIT_TABLE_PATTERN = "|".join(e for e in EXHIBITS if e != "figure1") or "none"
EXHIBIT_TITLES = {"table1": "Table 1: example responses by layer",
                  "table4": "Table 4: example responses before and after L-PPO",
                  "table5": "Table 5: example responses before and after L-PPO"}


def image_backend():
    """Image processors use torchvision when installed, else PIL: pixels differ, so record it."""
    import importlib.util

    return "torchvision" if importlib.util.find_spec("torchvision") else "pil"


def default_layer(model):
    """The layer the model runs unmodified (icet.models.registry.default_layer: LLaVA's
    penultimate N-1; Mllama's and Qwen2.5-VL's N)."""
    spec = MODELS[model]
    return registry.default_layer(spec["architecture"], spec["num_layers"], where=model)


# A model folder already here (downloaded, local or trained) must be the architecture and
# N the config says: one line now, not a wrong layer range deep into a sweep. Folders not
# here yet are checked when the sweep loads them (icet.models.load_adapter num_layers).
try:
    for _name, _spec in MODELS.items():
        if Path(model_dir(_name), "config.json").is_file():
            registry.check_checkpoint(_spec["architecture"], _name, _spec["num_layers"], model_dir(_name))
except IcetError as err:
    sys.exit(f"icet: config error: {err}")


# The planted positive controls (the toy's planted stage): models whose layer-wise
# misalignment was trained in on purpose. Each is labelled in every table and caption
# (PLANTED_LABEL); their ground truth comes from rule planted_truth (planted_truth()).
PLANTED_MODELS = [m for m, spec in MODELS.items() if spec.get("stage") == "planted"]


def caption_label():
    """The run label as captions show it, naming any planted positive control."""
    label = config["report"]["label"]
    if not PLANTED_MODELS:
        return label
    return f"{label}; {', '.join(PLANTED_MODELS)}: {PLANTED_LABEL}"


def report_params():
    return {
        "caption_label": caption_label(),
        "groups": {m: MODELS[m]["groups"] for m in MODELS},
        "default_layers": {m: default_layer(m) for m in MODELS},
        "bootstrap": {**config["bootstrap"], "seed": config["seed"]},
        "label": config["report"]["label"],
        "seed": config["seed"],
        "judges": judge_names(),
    }


def chosen_settings():
    """What we chose where the paper is silent, where we deviate from it, and which Table 2
    metrics our scorers differ on (icet.report.reproduction.run_settings)."""
    from icet.report.reproduction import run_settings

    chosen = run_settings(RESULT_CONFIG, judge_names())  # what defines results, no speed knobs
    chosen["settings"]["system prompt and image preprocessing"] = {
        m: prompting_of(spec) for m, spec in MODELS.items()}
    if not IS_TOY:
        chosen["settings"]["JailbreakV-28K images (data.jailbreakv)"] = {
            k: JBV[k] for k in ("images_dir", "rt_images", "mr_missing_images")}
    return chosen


def measure_decisions(config):
    """Each measure's choice and reason (docs/measures.md), recorded in the manifest."""
    from icet.report.reproduction import measure_decisions as decisions

    return decisions(config)
