"""Config loading and validation: every bad config stops with one line naming the key."""

from pathlib import Path

import pytest
import yaml

from icet import schemas
from icet.config import check_config, load_config, merge, model_layers
from icet.errors import IcetError

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "config.yaml"
TOY = ROOT / "toy" / "toy.yaml"


def _with(tmp_path, text):
    extra = tmp_path / "extra.yaml"
    extra.write_text(text)
    return load_config(PAPER, TOY, extra)


def test_paper_and_toy_configs_validate():
    paper = load_config(PAPER)
    toy = load_config(PAPER, TOY)
    assert paper["run"] == "paper" and len(paper["models"]) == 3
    assert toy["run"] == "toy"
    # the emergent toy, and the planted positive control that L-PPO repairs
    assert [(m["name"], m["stage"], m["lppo"]) for m in toy["models"]] == [
        ("toy-llava", "safety", False), ("toy-llava-planted", "planted", True)]
    assert toy["data_source"] == "toy"


def test_toy_block_is_checked_not_filled():
    """The toy's defaults are filled at use (icet.toy.settings): the parsed block is the file's,
    so rule params and the organism study's stage hashes do not move with a schema default."""
    from icet.config import load_yaml

    assert load_config(PAPER, TOY)["toy"] == load_yaml(TOY)["toy"]


def test_merge_replaces_lists_and_merges_mappings():
    merged = merge({"a": {"x": 1, "y": 2}, "l": [1, 2]}, {"a": {"y": 3}, "l": [9]})
    assert merged == {"a": {"x": 1, "y": 3}, "l": [9]}


def test_defaults_are_filled_from_schema():
    config = check_config({"run": "r", "testsets": ["cp"], "models": [
        {"name": "m", "source": "toy", "architecture": "llava", "num_layers": 4,
         "groups": {"a": [1, 2]}}], "data_source": "toy"})
    assert config["seed"] == 0
    assert config["generation"]["max_new_tokens"] == 128
    assert config["models"][0]["layers"] == "all"
    assert config["models"][0]["resources"]["gpu"] == 0


def test_every_top_level_key_is_described():
    schema = schemas.schema("config")
    top = schema["properties"]
    missing = [k for k, v in top.items() if "description" not in v]
    assert missing == []


@pytest.mark.parametrize("text, expected", [
    ("foo: 1", "unknown key 'foo'"),
    ("seed: abc", "key 'seed'"),
    ("generation: {max_new_tokens: x}", "key 'generation.max_new_tokens'"),
    ("judges: {guard: {sourc: toy}}", "unknown key 'sourc' in judges.guard"),
    ("device: tpu", "key 'device'"),
    ("testsets: [cp, zz]", "key 'testsets[1]'"),
    # the toy block, against src/icet/schemas/toy.schema.yaml
    ("toy: {stages: {vision: {stpes: 3}}}", "unknown key 'stpes' in toy.stages.vision"),
    ("toy: {stages: {planted: {rates: {early: 1.5}}}}", "key 'toy.stages.planted.rates.early'"),
    ("toy: {judges: {reward: {epochs: 0}}}", "key 'toy.judges.reward.epochs'"),
    ("toy: {sizes: {mrr: 3}}", "unknown key 'mrr' in toy.sizes"),
    ("toy: {arch: {patch_size: 5}}", "key 'toy.arch': image_size 32 not a multiple of patch_size 5"),
    # integers are strict: a float step count would fail only inside the training loop
    ("lppo: {steps: 3.0}", "key 'lppo.steps': 3.0 is not of type 'integer'"),
    ("toy: {stages: {vision: {steps: 3.0}}}", "key 'toy.stages.vision.steps': 3.0 is not of type"),
])
def test_bad_values_name_the_key(tmp_path, text, expected):
    with pytest.raises(IcetError) as err:
        _with(tmp_path, text)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_layer_out_of_range_names_model_and_layer(tmp_path):
    with pytest.raises(IcetError, match=r"models\[0\]\.layers.*layer 13 out of range 0\.\.12"):
        _with(tmp_path, yaml.safe_dump({"models": [{
            "name": "toy-llava", "source": "toy", "architecture": "llava", "num_layers": 12,
            "layers": [0, 13], "groups": {"early": [1, 4]}}]}))


def test_group_out_of_range_and_overlap(tmp_path):
    base = {"name": "t", "source": "toy", "architecture": "llava", "num_layers": 12}
    with pytest.raises(IcetError, match=r"groups\.late.*out of range"):
        _with(tmp_path, yaml.safe_dump({"models": [{**base, "groups": {"late": [9, 24]}}]}))
    with pytest.raises(IcetError, match="overlaps group 'a'"):
        _with(tmp_path, yaml.safe_dump({"models": [{**base, "groups": {"a": [1, 5], "b": [5, 8]}}]}))


def test_missing_local_model_folder_is_named(tmp_path):
    with pytest.raises(IcetError, match="model folder /no/such/model not found"):
        _with(tmp_path, yaml.safe_dump({"data_source": "paper", "models": [{
            "name": "m", "source": "local", "path": "/no/such/model", "architecture": "llava",
            "num_layers": 24, "groups": {"a": [1, 8]}}]}))


def test_broken_yaml_names_file_and_line(tmp_path):
    with pytest.raises(IcetError, match=r"extra\.yaml: line \d+: broken YAML"):
        _with(tmp_path, "seed: 1\nrun: [toy\n")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(IcetError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_fixed_layer_mode_needs_a_layer(tmp_path):
    with pytest.raises(IcetError, match="lppo.layer"):
        _with(tmp_path, "lppo: {layer_mode: fixed}")


def test_model_layers_all_and_list():
    assert model_layers({"num_layers": 3, "layers": "all"}) == [0, 1, 2, 3]
    assert model_layers({"num_layers": 3, "layers": [3, 1, 1]}) == [1, 3]


def test_fill_follows_refs_and_stops_at_the_levels_asked(monkeypatch):
    schema = {"$defs": {"d": {"type": "object", "properties": {"k": {"default": 5}}}},
              "properties": {"a": {"$ref": "#/$defs/d", "default": {}},
                             "b": {"$ref": "#/$defs/d"}}}
    monkeypatch.setattr(schemas, "schema", lambda name: schema)
    assert schemas.fill({}, "config") == {"a": {"k": 5}}
    # one level (the toy's params): a given mapping stands as given
    assert schemas.fill({"b": {}}, "config", levels=1) == {"a": {}, "b": {}}
    assert schemas.fill({"b": {}}, "config") == {"a": {"k": 5}, "b": {"k": 5}}


def test_prompting_keys_paper_choices_and_toy_unchanged(tmp_path):
    """The paper run gives LLaVA-1.5 its training input (Vicuna system prompt, padding),
    LLaVA-NeXT the Vicuna prompt and Mllama none; the toy keeps the template and processor."""
    from icet.config import prompting_of
    from icet.models.base import VICUNA_SYSTEM_PROMPT

    paper = {m["name"]: prompting_of(m) for m in load_config(PAPER)["models"]}
    assert paper["llava-1.5-7b"] == {"system_prompt": VICUNA_SYSTEM_PROMPT, "image_preprocessing": "pad"}
    assert paper["llava-next-7b"] == {"system_prompt": VICUNA_SYSTEM_PROMPT,
                                      "image_preprocessing": "processor"}
    assert paper["llama-3.2-11b-vision"] == {"system_prompt": None, "image_preprocessing": "processor"}
    toy = load_config(PAPER, TOY)["models"][0]
    assert prompting_of(toy) == {"system_prompt": None, "image_preprocessing": "processor"}
    with pytest.raises(IcetError, match=r"models\[0\]\.image_preprocessing.*pad is LLaVA-1\.5's"):
        _with(tmp_path, yaml.safe_dump({"models": [{
            "name": "t", "source": "toy", "architecture": "llava_next", "num_layers": 12,
            "groups": {"early": [1, 4]}, "image_preprocessing": "pad"}]}))


def test_lppo_processes_default_to_one_per_gpu_and_can_be_set(tmp_path):
    from icet.lppo.launch import processes_for

    paper, toy = load_config(PAPER), load_config(PAPER, TOY)
    assert [processes_for(m["resources"]) for m in paper["models"]] == [1, 1, 1]
    assert processes_for(toy["models"][0]["resources"]) == 1  # gpu: 0 -> one CPU process
    two_gpus = dict(paper["models"][0]["resources"], gpu=2)
    assert processes_for(two_gpus) == 2
    model = dict(toy["models"][0], resources={"gpu": 0, "processes": 2})
    rehearsal = _with(tmp_path, yaml.safe_dump({"models": [model]}))
    assert processes_for(rehearsal["models"][0]["resources"]) == 2
    model["resources"]["processes"] = 0
    with pytest.raises(IcetError, match="processes"):
        _with(tmp_path, yaml.safe_dump({"models": [model]}))


def test_tuning_keys_are_the_schemas_and_leave_the_result_defining_rest():
    """Batch sizes, the sweep engine, the device and L-PPO's memory knobs only tune speed:
    rules pass them apart from the params that rerun a job (case: a reward batch size change
    used to rerun and destroy a finished L-PPO run)."""
    from icet.config import load_config, split_tuning, tuning_paths, with_tuning

    paths = tuning_paths()
    assert ("judges", "reward", "batch_size") in paths and ("device",) in paths
    assert ("lppo", "reward_batch_size") in paths and ("sweep", "engine") in paths
    assert ("generation", "max_new_tokens") not in paths and ("lppo", "lr") not in paths
    config = load_config(ROOT / "config.yaml", ROOT / "toy" / "toy.yaml")
    result, tuning = split_tuning(config)
    assert "batch_size" not in result["judges"]["reward"] and result["judges"]["reward"]["max_length"] == 128
    assert tuning["judges"]["reward"] == {"batch_size": 64} and tuning["device"] == "cpu"
    assert "reward_batch_size" not in result["lppo"] and result["lppo"]["lr"] == 2.0e-4
    assert with_tuning(result, tuning) == config
    lppo, lppo_tuning = split_tuning(config["lppo"], "lppo")
    assert lppo == result["lppo"] and lppo_tuning == tuning["lppo"]


def test_nested_command_line_overrides_get_the_schemas_types():
    """Snakemake reads a nested --config value with YAML's BaseLoader: every leaf a string."""
    from icet.config import typed_overrides

    typed = typed_overrides({"judges": {"guard": {"batch_size": "32", "source": "toy"}},
                             "generation": {"max_new_tokens": "20"}, "run": "7",
                             "sweep": {"batch_size": "auto"}, "lppo": {"lr": "1e-4", "layer": "null"}})
    assert typed == {"judges": {"guard": {"batch_size": 32, "source": "toy"}},
                     "generation": {"max_new_tokens": 20}, "run": "7",
                     "sweep": {"batch_size": "auto"}, "lppo": {"lr": 1e-4, "layer": None}}
    assert typed_overrides({"seed": "three"}) == {"seed": "three"}  # still fails the schema


def test_a_profiles_config_files_survive_a_users_configfile(tmp_path, monkeypatch):
    from icet.command_line import profile_configfiles, swallowed_targets

    monkeypatch.chdir(tmp_path)
    argv = ["snakemake", "--profile", "toy", "--configfile", "my.yaml", "-n"]
    assert profile_configfiles(argv, ROOT) == [(ROOT / "toy" / "toy.yaml").resolve()]
    assert profile_configfiles(argv, ROOT, [ROOT / "toy" / "toy.yaml"]) == []
    assert profile_configfiles(["snakemake", "--profile=toy"], ROOT) == [(ROOT / "toy" / "toy.yaml").resolve()]
    assert profile_configfiles(["snakemake"], ROOT, environ={}) == []
    assert swallowed_targets(["snakemake", "--forcerun", "score_testset", "sweep"],
                             ["all", "sweep"]) == ["sweep"]
    assert swallowed_targets(["snakemake", "sweep", "-R", "score_testset"], ["all", "sweep"]) == []


def test_code_leaves_config_defaults_to_the_schema():
    """A function that takes a config key's value has no default of its own for it: it is
    given (the rules pass the config's, filled from the schema), or None stands for the
    schema's. (Code defaults once said 32 new tokens where the schema says 128, ASR 20 %
    where it says 50 %, judge batches of 8 where it says 16.)"""
    import inspect

    from icet import engine, stats, sweep
    from icet.judges.guard import GuardJudge
    from icet.judges.keyword import KeywordJudge
    from icet.judges.reward import RewardModel
    from icet.judges.toxicity import ToxicityJudge
    from icet.models.base import VLMAdapter
    from icet.report import agreement, examples, summary, tables

    takes = {
        engine.respond: ("max_new_tokens", "batch_size"),
        sweep.run_sweep_shard: ("max_new_tokens", "batch_size"),
        sweep.run_sweep_job: ("max_new_tokens", "batch_size"),
        VLMAdapter.generate: ("max_new_tokens",),
        GuardJudge.__init__: ("batch_size", "max_new_tokens"),
        RewardModel.__init__: ("batch_size", "max_length"),
        ToxicityJudge.__init__: ("batch_size",),
        KeywordJudge.__init__: ("mode",),
        summary.write_summary: ("thresholds",),
        summary.lppo_checks: ("vqa_drop_max",),
        agreement.write_agreement_table: ("toxicity_threshold",),
        examples.write_example_table: ("show_responses", "shown_words"),
        examples.figure1: ("show_responses", "shown_words"),
        stats.bootstrap_ci: ("n_resamples", "ci", "seed"),
        stats.difference_ci: ("n_resamples", "ci", "seed"),
        tables.write_table2: ("train_set",),
    }
    own = [f"{fn.__qualname__}({name}={inspect.signature(fn).parameters[name].default!r})"
           for fn, names in takes.items() for name in names
           if inspect.signature(fn).parameters[name].default not in (inspect.Parameter.empty, None)]
    assert own == []
