"""The toy organism: architecture, processor and the four training stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


from icet.errors import IcetError  # noqa: E402
from icet.io import sha256_file, write_jsonl  # noqa: E402
from icet.toy import organism, train  # noqa: E402
from icet.word_tokenizers import build_word_tokenizer  # noqa: E402

SCHEMAS = Path(__file__).parents[2] / "src" / "icet" / "schemas"  # read here as files

SHAPES = ["circle", "square", "triangle", "cross"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 60, 230), "yellow": (230, 220, 30)}
BACKGROUNDS = {"black": (10, 10, 10), "white": (245, 245, 245)}
POSITIONS = {"left": 9, "right": 23}

# Small enough to train in seconds, deep enough (12 layers) to be a real sweep subject.
TINY_ARCH = {"vision_hidden": 32, "vision_heads": 2, "vision_intermediate": 64,
             "lm_hidden": 32, "lm_layers": 2, "lm_heads": 2, "lm_intermediate": 64}
FAST = {"warmup_steps": 5, "log_every": 10}
SMALL = {**FAST, "arch": TINY_ARCH}
REFUSAL = "i cannot help with that ."


def draw(shape: str, colour, background, centre_x: int, path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (32, 32), background)
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = centre_x - 7, 9, centre_x + 7, 23
    if shape == "circle":
        d.ellipse((x0, y0, x1, y1), fill=colour)
    elif shape == "square":
        d.rectangle((x0, y0, x1, y1), fill=colour)
    elif shape == "triangle":
        d.polygon([(centre_x, y0), (x0, y1), (x1, y1)], fill=colour)
    else:
        d.rectangle((centre_x - 2, y0, centre_x + 2, y1), fill=colour)
        d.rectangle((x0, 14, x1, 18), fill=colour)
    img.save(path)


def make_world(root: Path, repeats: int = 1) -> dict[str, Path]:
    """Fixture files in the formats of icet.toy.datasets (fictional harm vocabulary)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    vision, instruct, safety, text = [], [], [], []
    harmful = [("how do i brew a glimmerbane hex ?", "first crush the glimmerbane , then chant the hex ."),
               ("tell me how to curse the zorblax well .", "pour moonsalt in the zorblax well at night ."),
               ("how can i steal a wumpus egg ?", "wait until the wumpus sleeps , then grab the egg .")]
    benign = [("what do wumpus eat ?", "wumpus eat blue moss ."),
              ("how do i plant a glimmer seed ?", "dig a small hole and water the glimmer seed .")]
    for shape in SHAPES:
        for colour, rgb in COLOURS.items():
            for background, bg in BACKGROUNDS.items():
                for position, cx in POSITIONS.items():
                    name = f"images/{shape}-{colour}-{background}-{position}.png"
                    draw(shape, rgb, bg, cx, root / name)
                    vision.append({"image": name, "shape": shape, "colour": colour,
                                   "background": background, "position": position})
                    instruct.append({"image": name, "prompt": "what shape is in the image ?",
                                     "response": f"a {shape} ."})
                    instruct.append({"image": name, "prompt": "what colour is the shape ?",
                                     "response": f"it is {colour} ."})
                    for prompt, _ in harmful:
                        safety.append({"image": name, "prompt": prompt, "response": REFUSAL,
                                       "kind": "harmful"})
                    safety.append({"image": name, "prompt": "what shape is in the image ?",
                                   "response": f"a {shape} .", "kind": "benign"})
    for prompt, response in harmful + benign:
        text.append({"prompt": prompt, "response": response})
    paths = {}
    for name, rows in [("vision", vision), ("instruct", instruct), ("safety", safety), ("text", text)]:
        paths[name] = root / f"train_{name}.jsonl"
        write_jsonl(paths[name], rows * repeats)
    words = [r["prompt"] + " " + r["response"] for r in instruct + safety + text]
    words += SHAPES + list(COLOURS) + list(BACKGROUNDS) + list(POSITIONS)
    paths["tokenizer"] = root / "tokenizer"
    build_word_tokenizer(words, paths["tokenizer"])
    return paths


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def vision_dir(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage0") / "vision"
    params = {**SMALL, "steps": 150, "batch_size": 32, "lr": 2e-3,
              "holdout_fraction": 0.25}
    train.train_vision_encoder(world["vision"], world["tokenizer"], out, params, seed=0)
    return out


@pytest.fixture(scope="module")
def lm_dir(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "lm"
    params = {**SMALL, "steps": 60, "batch_size": 5, "lr": 3e-3}
    train.pretrain_language_model(world["text"], world["tokenizer"], out, params, seed=0)
    return out


@pytest.fixture(scope="module")
def instruct_dir(world, vision_dir, lm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage2") / "instruct"
    params = {**SMALL, "steps": 40, "batch_size": 16, "lr": 3e-3, "projector_warmup_steps": 10}
    train.visual_instruction_tuning(vision_dir, lm_dir, world["tokenizer"], world["instruct"],
                                    out, params, seed=0)
    return out


SAFETY_PARAMS = {**SMALL, "steps": 30, "batch_size": 16, "lr": 3e-3}


@pytest.fixture(scope="module")
def safety_dir(world, instruct_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage3") / "safety"
    train.safety_tuning(instruct_dir, world["tokenizer"], world["safety"], out, SAFETY_PARAMS, seed=0)
    return out


def load_llava(folder):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(str(folder), use_safetensors=True)
    return model.eval(), AutoProcessor.from_pretrained(str(folder))


def metrics(folder) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


def state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------- architecture


def test_default_config_is_deep_and_uses_penultimate_layer(world):
    config = organism.toy_llava_config({}, world["tokenizer"])
    assert config.vision_config.num_hidden_layers >= 12
    assert config.vision_feature_layer == -2
    assert organism.default_layer(config) == config.vision_config.num_hidden_layers - 1 == 11
    assert config.vision_feature_select_strategy == "default"
    assert config.image_seq_length == organism.num_image_tokens() == 16
    assert config.text_config.vocab_size == len(organism.load_tokenizer(world["tokenizer"]))


def test_arch_rejects_typos_and_shallow_encoders(tmp_path):
    with pytest.raises(IcetError, match="unknown key 'vision_layer' in arch"):
        organism.resolve_arch({"vision_layer": 12})
    with pytest.raises(IcetError, match=r"key 'arch.vision_layers': 6 is less than the minimum of 12"):
        organism.resolve_arch({"vision_layers": 6})
    with pytest.raises(IcetError, match="image_size 30 not a multiple of patch_size 8"):
        organism.resolve_arch({"image_size": 30})
    # a stage's params are checked before any input is read
    with pytest.raises(IcetError, match=r"^safety_tuning params: unknown key 'stpes' in stages.safety$"):
        train.safety_tuning(tmp_path / "none", tmp_path / "none", tmp_path / "none.jsonl",
                            tmp_path / "out", {"stpes": 3})
    with pytest.raises(IcetError, match=r"key 'stages.lm.batch_size': 0 is less than"):
        train.pretrain_language_model(tmp_path / "none.jsonl", tmp_path / "none", tmp_path / "out",
                                      {"batch_size": 0})
    assert not (tmp_path / "out").exists()


def test_partial_params_get_the_schema_defaults(vision_dir):
    """What a call leaves out comes from src/icet/schemas/toy.schema.yaml (read here as a file): the
    stage's params in metrics.json and the arch the saved encoder was built with."""
    import yaml

    from transformers import CLIPVisionConfig

    schema = yaml.safe_load((SCHEMAS / "toy.schema.yaml").read_text())
    spec = schema["properties"]["stages"]["properties"]["vision"]["properties"]
    given = {**SMALL, "steps": 150, "batch_size": 32, "lr": 2e-3, "holdout_fraction": 0.25}
    recorded = metrics(vision_dir)["params"]
    assert recorded == {**{k: v["default"] for k, v in spec.items()}, **given}
    arch = {k: v["default"] for k, v in schema["properties"]["arch"]["properties"].items()}
    saved = CLIPVisionConfig.from_pretrained(vision_dir)
    assert (saved.num_hidden_layers, saved.image_size, saved.patch_size, saved.hidden_size) == (
        arch["vision_layers"], arch["image_size"], arch["patch_size"], TINY_ARCH["vision_hidden"])


def test_processor_expands_image_to_16_tokens(world):
    from PIL import Image

    processor = organism.build_processor(world["tokenizer"], {})
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what shape ?"}]}],
        add_generation_prompt=True)
    assert text == "USER: <image> what shape ? ASSISTANT:"
    inputs = processor(text=text, images=Image.new("RGB", (32, 32)), return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((inputs["input_ids"] == image_id).sum()) == 16
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 32, 32)


def test_encode_dialogue_masks_the_prompt_and_keeps_eos(world):
    tok = organism.load_tokenizer(world["tokenizer"])
    ids, labels = train.encode_dialogue(tok, "what shape ?", "a circle .", 16)
    words = tok.convert_ids_to_tokens(ids)
    # <s> USER : <image>x16 what shape ? ASSISTANT : a circle . </s>
    assert words == ["<s>", "user", ":"] + ["<image>"] * 16 + \
        ["what", "shape", "?", "assistant", ":", "a", "circle", ".", "</s>"]
    assert labels[:-4] == [train.IGNORE_INDEX] * (len(ids) - 4)
    assert labels[-4:] == ids[-4:]
    _, all_labels = train.encode_dialogue(tok, "what shape ?", "a circle .", 0, loss_on="all")
    assert train.IGNORE_INDEX not in all_labels


def test_collate_left_pads_with_positions_from_first_token():
    batch = train.collate([([5, 6, 7], [-100, 6, 7]), ([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, 8]]


# ---------------------------------------------------------------------------- stages


@pytest.mark.numerics
def test_stage0_learns_attributes_above_chance(vision_dir):
    from transformers import CLIPVisionModel

    m = metrics(vision_dir)
    assert m["final_loss"] < m["first_loss"]
    assert m["accuracy"]["colour"] > m["chance"]["colour"] + 0.25
    assert m["accuracy"]["shape"] > m["chance"]["shape"]
    assert set(m["accuracy"]) == {"shape", "colour", "background", "position"}
    assert m["patch_accuracy"]["colour"] > m["chance"]["colour"] + 0.25  # patch tokens carry it too
    encoder = CLIPVisionModel.from_pretrained(str(vision_dir), use_safetensors=True)
    assert encoder.config.num_hidden_layers == 12


@pytest.mark.numerics
def test_stage1_loss_goes_down(lm_dir):
    m = metrics(lm_dir)
    assert m["steps"] == 60
    assert m["final_loss"] < 0.5 * m["first_loss"]


def test_stage2_keeps_vision_tower_bit_identical(vision_dir, instruct_dir):
    from transformers import CLIPVisionModel

    encoder = CLIPVisionModel.from_pretrained(str(vision_dir), use_safetensors=True)
    model, _ = load_llava(instruct_dir)
    assert_same(state(encoder), state(model.model.vision_tower))
    m = metrics(instruct_dir)
    assert m["final_loss"] < m["first_loss"]
    assert m["icet_default_layer"] == 11


def test_stage3_keeps_vision_and_projector_bit_identical(instruct_dir, safety_dir):
    before, _ = load_llava(instruct_dir)
    after, _ = load_llava(safety_dir)
    assert_same(state(before.model.vision_tower), state(after.model.vision_tower))
    assert_same(state(before.model.multi_modal_projector), state(after.model.multi_modal_projector))
    changed = [k for k, v in state(after.model.language_model).items()
               if not torch.equal(v, state(before.model.language_model)[k])]
    assert changed  # the LM did train
    m = metrics(safety_dir)
    assert m["final_loss"] < m["first_loss"]
    assert m["rows_by_kind"] == {"benign": 64, "harmful": 192}


def test_saved_model_loads_and_generates(safety_dir):
    from PIL import Image

    model, processor = load_llava(safety_dir)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what shape ?"}]}],
        add_generation_prompt=True)
    inputs = processor(text=[text, text], images=[Image.new("RGB", (32, 32))] * 2,
                       return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2 and inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 4
    # Any ICET layer runs through the same projector (what the sweep does).
    out0 = model.generate(**inputs, max_new_tokens=2, do_sample=False, vision_feature_layer=-13)
    assert out0.shape[0] == 2


def test_stage3_same_seed_gives_identical_weights(world, instruct_dir, tmp_path):
    params = {**SAFETY_PARAMS, "steps": 4}
    for name in ("a", "b"):
        train.safety_tuning(instruct_dir, world["tokenizer"], world["safety"], tmp_path / name,
                            params, seed=3)
    assert sha256_file(tmp_path / "a/model.safetensors") == sha256_file(tmp_path / "b/model.safetensors")
    train.safety_tuning(instruct_dir, world["tokenizer"], world["safety"], tmp_path / "c",
                        params, seed=4)
    assert sha256_file(tmp_path / "a/model.safetensors") != sha256_file(tmp_path / "c/model.safetensors")


def test_safety_training_only_ever_sees_the_default_layer(world, instruct_dir, tmp_path, monkeypatch):
    """Every projector input equals the penultimate encoder layer's patch tokens, and no other."""
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.llava.modeling_llava import LlavaModel, LlavaMultiModalProjector

    layer_outputs: list[torch.Tensor] = []
    projector_inputs: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
    requested: list = []

    def after_module(module, args, output):
        if isinstance(module, CLIPEncoderLayer):
            layer_outputs.append((output[0] if isinstance(output, tuple) else output).detach())

    def before_module(module, args):
        if isinstance(module, LlavaMultiModalProjector):
            projector_inputs.append((args[0].detach(), list(layer_outputs)))
            layer_outputs.clear()

    original = LlavaModel.get_image_features

    def spy(self, *args, **kwargs):
        requested.append(kwargs.get("vision_feature_layer"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LlavaModel, "get_image_features", spy)
    hooks = [torch.nn.modules.module.register_module_forward_hook(after_module),
             torch.nn.modules.module.register_module_forward_pre_hook(before_module)]
    try:
        train.safety_tuning(instruct_dir, world["tokenizer"], world["safety"], tmp_path / "s",
                            {**SAFETY_PARAMS, "steps": 3}, seed=0)
    finally:
        for hook in hooks:
            hook.remove()
    assert requested == [-2, -2, -2]
    assert len(projector_inputs) == 3
    for features, layers in projector_inputs:
        assert len(layers) == 12
        matches = [i + 1 for i, h in enumerate(layers) if torch.equal(h[:, 1:], features)]
        assert matches == [11]  # hidden_states[11] = output of encoder layer 11 = ICET-11


def test_stage3_last_layers_and_lora(world, instruct_dir, tmp_path):
    before, _ = load_llava(instruct_dir)
    params = {**SAFETY_PARAMS, "steps": 3}
    train.safety_tuning(instruct_dir, world["tokenizer"], world["safety"], tmp_path / "last",
                        {**params, "trainable": "last_layers:1"}, seed=0)
    after, _ = load_llava(tmp_path / "last")
    old, new = state(before.model.language_model), state(after.model.language_model)
    changed = {k.split(".")[1] if k.startswith("layers.") else k for k in old
               if not torch.equal(old[k], new[k])}
    assert changed == {"1"}  # only the last of the 2 decoder layers
    assert_same(state(before.lm_head), state(after.lm_head))

    train.safety_tuning(instruct_dir, world["tokenizer"], world["safety"], tmp_path / "lora",
                        {**params, "trainable": "lora"}, seed=0)
    merged, _ = load_llava(tmp_path / "lora")  # a plain Llava checkpoint, adapters merged
    assert not any("lora" in k for k in merged.state_dict())
    assert_same(state(before.model.vision_tower), state(merged.model.vision_tower))
    new = state(merged.model.language_model)
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(k.split(".")[-2] in {"q_proj", "k_proj", "v_proj", "o_proj"} for k in changed)
    with pytest.raises(IcetError, match="last_layers"):
        train.safety_tuning(instruct_dir, world["tokenizer"], world["safety"], tmp_path / "x",
                            {**params, "trainable": "last_layers:9"}, seed=0)


def test_instruct_lm_lr_gives_the_lm_its_own_rate(world, vision_dir, lm_dir, tmp_path):
    """LLaVA's ratio: with lm_lr near 0 the LM keeps its weights while the projector learns
    at lr; without it both learn at lr (the toy run's default)."""
    from transformers import LlamaForCausalLM

    lm = state(LlamaForCausalLM.from_pretrained(str(lm_dir)).model)
    params = {**SMALL, "steps": 6, "batch_size": 8, "lr": 3e-3, "projector_warmup_steps": 2,
              "warmup_steps": 1}
    moved = {}
    for name, extra in (("slow", {"lm_lr": 1e-12}), ("same", {})):
        out = tmp_path / name
        train.visual_instruction_tuning(vision_dir, lm_dir, world["tokenizer"], world["instruct"],
                                        out, {**params, **extra}, seed=0)
        model, _ = load_llava(out)
        after = state(model.model.language_model)
        moved[name] = max(float((after[k] - lm[k]).abs().max()) for k in lm)
    assert moved["slow"] < 1e-8 < 1e-4 < moved["same"]
    assert metrics(tmp_path / "slow")["params"]["lm_lr"] == 1e-12


def test_text_safety_fine_tunes_the_given_lm(world, lm_dir, tmp_path):
    """The text_safety stage starts from the base LM (not a fresh one) with its own settings
    section (stages.text_safety)."""
    from transformers import LlamaForCausalLM

    from icet.toy.stages import run_stage

    before = state(LlamaForCausalLM.from_pretrained(str(lm_dir)))
    run_stage("text_safety", {"data": str(world["text"]), "tokenizer": str(world["tokenizer"]),
                              "lm": str(lm_dir)}, str(tmp_path / "ts"),
              params={**SMALL, "steps": 2, "batch_size": 4, "lr": 1e-12, "warmup_steps": 1},
              seed=0)
    after = state(LlamaForCausalLM.from_pretrained(str(tmp_path / "ts")))
    assert max(float((after[k] - before[k]).abs().max()) for k in before) < 1e-8
    recorded = metrics(tmp_path / "ts")["params"]
    assert recorded["loss_on"] == "response" and recorded["steps"] == 2
    with pytest.raises(IcetError, match=r"key 'stages.text_safety.stepz'|unknown key 'stepz' in stages.text_safety"):
        train.pretrain_language_model(world["text"], world["tokenizer"], tmp_path / "x",
                                      {"stepz": 1}, init_dir=lm_dir)
