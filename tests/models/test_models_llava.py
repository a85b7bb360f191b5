"""LlavaAdapter / load_adapter on tiny random LLaVA and LLaVA-NeXT checkpoints built on disk.

The builders below save model + processor with `save_pretrained` and every test loads them
back through `load_adapter`, exactly as a downloaded checkpoint would be loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


from icet.errors import IcetError  # noqa: E402
from icet.models import Generation, load_adapter  # noqa: E402
from icet.models.loading import resolve_device, resolve_dtype  # noqa: E402
from tiny_models import (IMAGE_TOKENS, LLAVA_HF_CHAT_TEMPLATE, N_LAYERS, PROMPTS, TINY_WORDS,  # noqa: E402
                         build_tiny_llava, build_tiny_llava_next, noise_image)

@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def adapter(llava_dir):
    return load_adapter(llava_dir)


@pytest.fixture(scope="module")
def images():
    return [noise_image(0, 40, 48), noise_image(1, 32, 32), noise_image(2, 50, 30)]


def manual_llava_logits(adapter, inputs, layer):
    """ICET-l by hand: hidden_states[l][:, 1:] -> projector -> merge at <image> -> LM."""
    model = adapter.model
    vision = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
    features = model.model.multi_modal_projector(vision.hidden_states[layer][:, 1:])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    embeds = model.model.get_input_embeddings()(ids).clone()
    image_positions = ids == model.config.image_token_id
    embeds[image_positions] = features.reshape(-1, features.shape[-1])
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=mask,
                                        position_ids=position_ids).last_hidden_state
    return model.lm_head(hidden)


def test_layer_bookkeeping_and_provenance(adapter):
    assert adapter.num_layers == N_LAYERS
    assert adapter.default_layer == N_LAYERS - 1  # vision_feature_layer=-2
    assert [adapter.feature_kwargs(l)["vision_feature_layer"] for l in range(5)] == [-5, -4, -3, -2, -1]
    assert adapter.info["image_processor_class"] == "CLIPImageProcessorPil"
    assert adapter.info["image_processor_backend"] == "pil"
    assert adapter.info["model_type"] == "llava" and adapter.info["dtype"] == "float32"
    assert not adapter.model.training


def test_hidden_states_follow_the_contract(adapter, images):
    """hidden_states[0] = pre_layrnorm(embeddings); hidden_states[l] = encoder layer l's output."""
    tower = adapter.model.model.vision_tower
    pixels = adapter.prepare(PROMPTS[:1], images[:1])["pixel_values"]
    with torch.inference_mode():
        states = tower(pixels, output_hidden_states=True).hidden_states
        assert len(states) == N_LAYERS + 1
        hidden = tower.pre_layrnorm(tower.embeddings(pixels))
        torch.testing.assert_close(states[0], hidden, rtol=0, atol=0)
        for l, layer in enumerate(tower.encoder.layers, start=1):
            hidden = layer(hidden, attention_mask=None)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            torch.testing.assert_close(states[l], hidden, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer", range(N_LAYERS + 1))
def test_icet_logits_match_manual_computation(adapter, images, layer):
    inputs = adapter.prepare(PROMPTS, images)
    got = adapter.logits(PROMPTS, images, layer)
    with torch.inference_mode():
        want = manual_llava_logits(adapter, inputs, layer)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_default_layer_reproduces_unmodified_model(adapter, images):
    untouched = adapter.logits(PROMPTS, images, layer=None)
    assert torch.equal(adapter.logits(PROMPTS, images, adapter.default_layer), untouched)
    inputs = adapter.prepare(PROMPTS, images)
    with torch.inference_mode():
        plain = adapter.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    plain = adapter.split_generations(inputs, plain)
    assert adapter.generate(PROMPTS, images, adapter.default_layer, max_new_tokens=6) == plain


def test_layers_give_different_outputs(adapter, images):
    logits = [adapter.logits(PROMPTS, images, l) for l in range(N_LAYERS + 1)]
    for a in range(len(logits)):
        for b in range(a + 1, len(logits)):
            assert (logits[a] - logits[b]).abs().max() > 1e-3, (a, b)


@pytest.mark.parametrize("layer", [-1, N_LAYERS + 1, "2", 2.0, True])
def test_out_of_range_layer_is_an_icet_error(adapter, images, layer):
    with pytest.raises(IcetError, match="out of range"):
        adapter.generate(PROMPTS[:1], images[:1], layer, max_new_tokens=2)
    with pytest.raises(IcetError, match="out of range"):
        adapter.logits(PROMPTS[:1], images[:1], layer)


def test_prepare_uses_chat_template_and_left_padding(adapter, images):
    inputs = adapter.prepare(["what ?", "describe the shape and its colour ."], images[:2])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    tokenizer = adapter.processor.tokenizer
    short = ids[0][mask[0].bool()].tolist()
    # <s> user : <image>x16 what ? assistant :
    assert tokenizer.convert_ids_to_tokens(short) == (
        ["<s>", "user", ":"] + ["<image>"] * IMAGE_TOKENS + ["what", "?", "assistant", ":"])
    assert mask[0].tolist() == [0] * 5 + [1] * (ids.shape[1] - 5)  # padded on the left
    assert mask[1].all() and (ids[0, :5] == tokenizer.pad_token_id).all()


def test_batched_generation_equals_one_at_a_time(adapter, images):
    batched = adapter.generate(PROMPTS, images, layer=1, max_new_tokens=8)
    single = [adapter.generate([p], [i], layer=1, max_new_tokens=8)[0] for p, i in zip(PROMPTS, images)]
    assert batched == single
    assert all(len(g.response_ids) >= 1 for g in batched)


def test_generation_split_at_first_eos(adapter):
    """Prompt ids drop padding; the response keeps EOS in ids, not in text; pad after EOS is cut."""
    tok = adapter.processor.tokenizer
    w = tok.convert_tokens_to_ids
    pad, eos = tok.pad_token_id, tok.eos_token_id
    inputs = {"input_ids": torch.tensor([[pad, 1, w("what")], [1, w("what"), w("?")]]),
              "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]])}
    sequences = torch.cat([inputs["input_ids"], torch.tensor(
        [[w("a"), w("red"), eos, pad], [w("no"), pad, w(","), w("no")]])], dim=1)
    first, second = adapter.split_generations(inputs, sequences)
    assert first == Generation(text="a red", prompt_ids=[1, w("what")],
                               response_ids=[w("a"), w("red"), eos], finished=True)
    # no EOS within budget: everything kept (an emitted pad id is just a token), not finished
    assert second == Generation(text="no , no", prompt_ids=[1, w("what"), w("?")],
                                response_ids=[w("no"), pad, w(","), w("no")], finished=False)


def test_llava_next_every_layer(tmp_path):
    adapter = load_adapter(build_tiny_llava_next(tmp_path / "tiny-next"))
    assert (adapter.num_layers, adapter.default_layer, adapter.info["model_type"]) == (4, 3, "llava_next")
    images = [noise_image(3, 30, 70), noise_image(4, 32, 32)]  # 1x2 tiles + base; 1 tile + base
    inputs = adapter.prepare(PROMPTS[:2], images)
    model = adapter.model
    n_tiles = [3, 2]
    tower_batches = []
    hook = model.model.vision_tower.register_forward_hook(
        lambda module, args, out: tower_batches.append(args[0].shape[0]))
    try:
        for layer in range(N_LAYERS + 1):
            got = adapter.logits(PROMPTS[:2], images, layer)
            with torch.inference_mode():  # by hand: every tile exits at the same layer
                pixels = torch.cat([p[:n] for p, n in zip(inputs["pixel_values"], n_tiles)])
                states = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
                tiles = model.model.multi_modal_projector(states[layer][:, 1:]).split(n_tiles)
                packed, _ = model.model.pack_image_features(
                    tiles, inputs["image_sizes"], "default", image_newline=model.model.image_newline)
                ids, mask = inputs["input_ids"], inputs["attention_mask"]
                embeds = model.model.get_input_embeddings()(ids).clone()
                embeds[ids == model.config.image_token_id] = torch.cat(packed)
                position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
                hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=mask,
                                                    position_ids=position_ids).last_hidden_state
                torch.testing.assert_close(got, model.lm_head(hidden), rtol=1e-5, atol=1e-5)
            generations = adapter.generate(PROMPTS[:2], images, layer, max_new_tokens=3)
            assert len(generations) == 2 and all(g.response_ids for g in generations)
    finally:
        hook.remove()
    # All tiles of the batch go through the tower together (one call per forward/prefill).
    assert set(tower_batches) == {sum(n_tiles)}
    assert torch.equal(adapter.logits(PROMPTS[:2], images, None),
                       adapter.logits(PROMPTS[:2], images, adapter.default_layer))


def test_load_adapter_names_bad_folders(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(IcetError, match="no-such-model: model folder not found"):
        load_adapter(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IcetError, match="empty: no config.json"):
        load_adapter(empty)
    other = tmp_path / "qwen-like"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(IcetError, match="qwen-like: model_type .qwen2_vl. is not supported"):
        load_adapter(other)


def test_load_adapter_needs_safetensors(tmp_path, llava_dir):
    import shutil

    copy = tmp_path / "pickled"
    shutil.copytree(llava_dir, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(IcetError, match="pickled: cannot load llava model"):
        load_adapter(copy)


def test_device_and_dtype_defaults(monkeypatch):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(IcetError, match="dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))


def test_peft_lora_changes_outputs_only_when_nonzero(tmp_path, llava_dir, adapter, images):
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    base = LlavaForConditionalGeneration.from_pretrained(llava_dir)
    lora = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0,
                                           target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    lora.save_pretrained(tmp_path / "zero-lora")  # LoRA B starts at zero: a no-op adapter
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    lora.save_pretrained(tmp_path / "live-lora")

    reference = adapter.logits(PROMPTS, images, 2)
    zero = load_adapter(llava_dir, peft_adapter=tmp_path / "zero-lora")
    live = load_adapter(llava_dir, peft_adapter=tmp_path / "live-lora")
    assert zero.info["peft_adapter"].endswith("zero-lora") and not live.model.training
    torch.testing.assert_close(zero.logits(PROMPTS, images, 2), reference, rtol=0, atol=1e-6)
    assert (live.logits(PROMPTS, images, 2) - reference).abs().max() > 1e-2
    assert zero.generate(PROMPTS, images, 2, max_new_tokens=4) == \
        adapter.generate(PROMPTS, images, 2, max_new_tokens=4)
    with pytest.raises(IcetError, match="no-adapter: peft adapter folder not found"):
        load_adapter(llava_dir, peft_adapter=tmp_path / "no-adapter")


def test_system_prompt_key_decides_what_the_model_sees(llava_dir, images):
    """With the llava-hf template, a system_prompt gives LLaVA's own vicuna_v1 prompt (its
    Conversation.get_prompt, sep_style TWO: system + " " + "USER: " + message + " " +
    "ASSISTANT:"); without one, the llava-hf prompt, which lacks it."""
    from icet.models.base import VICUNA_SYSTEM_PROMPT

    plain = load_adapter(llava_dir)
    vicuna = load_adapter(llava_dir, system_prompt=VICUNA_SYSTEM_PROMPT)
    for adapter in (plain, vicuna):
        adapter.processor.chat_template = LLAVA_HF_CHAT_TEMPLATE
    message = "<image>\n" + PROMPTS[0]
    assert plain.chat_texts(PROMPTS[:1]) == [f"USER: {message} ASSISTANT:"]
    assert vicuna.chat_texts(PROMPTS[:1]) == [f"{VICUNA_SYSTEM_PROMPT} USER: {message} ASSISTANT:"]
    assert vicuna.info["system_prompt"] == VICUNA_SYSTEM_PROMPT and plain.info["system_prompt"] is None
    # and it is tokenised: the system words come before the user turn
    longer = vicuna.prepare(PROMPTS[:1], images[:1])["input_ids"].shape[1]
    assert longer > plain.prepare(PROMPTS[:1], images[:1])["input_ids"].shape[1]


def test_a_template_that_drops_the_system_turn_is_an_error(llava_dir, images):
    from icet.models.base import VICUNA_SYSTEM_PROMPT

    adapter = load_adapter(llava_dir, system_prompt=VICUNA_SYSTEM_PROMPT)
    adapter.processor.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for p in m['content'] %}"
        "{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %} {% endif %}{% endfor %}"
        "ASSISTANT:")
    with pytest.raises(IcetError, match="drops the system turn"):
        adapter.prepare(PROMPTS[:1], images[:1])


def test_pad_keeps_the_whole_non_square_image_crop_cuts_it(llava_dir):
    """A wide image: "processor" (llava-hf CLIP: short side to 32, centre crop) keeps only its
    middle; "pad" (LLaVA's expand2square) puts it on a square of the mean colour first, so
    the top and bottom bands are that colour and nothing is cut."""
    from PIL import Image

    wide = noise_image(5, 20, 60)  # height 20, width 60
    cropped = load_adapter(llava_dir)
    padded = load_adapter(llava_dir, image_preprocessing="pad")
    assert (cropped.info["image_preprocessing"], padded.info["image_preprocessing"]) == ("processor", "pad")
    processor = cropped.processor.image_processor
    pixels = {a.info["image_preprocessing"]: a.prepare(PROMPTS[:1], [wide])["pixel_values"][0]
              for a in (cropped, padded)}
    # processor: exactly what the image processor makes of the image itself
    torch.testing.assert_close(pixels["processor"],
                               processor(wide, return_tensors="pt")["pixel_values"][0])
    # pad: a 60x60 canvas of int(mean * 255), the image pasted at rows 20..39, then the processor
    mean = np.array(processor.image_mean)
    canvas = np.empty((60, 60, 3), dtype=np.uint8)
    canvas[:] = (mean * 255).astype(int)
    canvas[20:40] = np.asarray(wide)
    torch.testing.assert_close(pixels["pad"], processor(Image.fromarray(canvas),
                                                         return_tensors="pt")["pixel_values"][0])
    # the bands above and below the image are the mean colour, normalised (about 0)
    band = ((mean * 255).astype(int) / 255 - mean) / np.array(processor.image_std)
    for rows in (slice(0, 8), slice(-8, None)):
        torch.testing.assert_close(pixels["pad"][:, rows],
                                   torch.tensor(band, dtype=torch.float32)[:, None, None].expand(3, 8, 32),
                                   rtol=0, atol=1e-6)
        assert pixels["processor"][:, rows].std() > 0.3  # cropped: image everywhere
    # a square image is left as it is
    square = noise_image(6, 32, 32)
    assert torch.equal(cropped.prepare(PROMPTS[:1], [square])["pixel_values"],
                       padded.prepare(PROMPTS[:1], [square])["pixel_values"])


def test_bad_image_preprocessing_is_an_icet_error(llava_dir):
    with pytest.raises(IcetError, match="image_preprocessing 'squash'"):
        load_adapter(llava_dir, image_preprocessing="squash")

