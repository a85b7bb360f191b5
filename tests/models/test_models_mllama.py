"""MllamaAdapter on a tiny random Llama 3.2 Vision saved to disk and loaded like a download.

ICET-l for Mllama = the local vision encoder exits after layer l (icet.models.mllama). The
manual computation below rebuilds the vision features from the local encoder's input with
the model's own blocks, outside any hook, in the form of Meta's reference encoder (a tap at
block idx is the state before that block), and feeds them to the LM as cross-attention
states; the adapter must agree at every l, and at l = N it is Meta's model, which
transformers 5.23 (taps after the block) is not.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch


from icet.errors import IcetError  # noqa: E402
from icet.lppo.rollout import (PolicyWithValue, generate_samples, placeholder_token_ids,  # noqa: E402
                               score_samples)
from icet.models import load_adapter  # noqa: E402
from icet.models.mllama import MllamaAdapter, cross_attention_mask_for  # noqa: E402
from tiny_models import MLLAMA_LAYERS, MLLAMA_TAPS, PROMPTS, build_tiny_mllama, noise_image  # noqa: E402


@pytest.fixture(scope="module")
def mllama_dir(tmp_path_factory):
    return build_tiny_mllama(tmp_path_factory.mktemp("tiny-mllama"))


@pytest.fixture(scope="module")
def adapter(mllama_dir):
    return load_adapter(mllama_dir)


@pytest.fixture(scope="module")
def images():
    # 40x48 and 50x30 tile into several 16x16 tiles, 16x16 is one tile: padding tiles too
    return [noise_image(0, 40, 48), noise_image(1, 16, 16), noise_image(2, 50, 30)]


def positions(mask):
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def manual_mllama_logits(adapter, inputs, layer):
    """Meta's local encoder by hand (llama-models ImageTransformer.forward: `if idx in
    return_intermediate: out.append(x)`, then `x = r(x)`) with the blocks past l skipped, then
    the global encoder, the projector and the LM (through `cross_attention_states`)."""
    model = adapter.model
    vision = model.model.vision_model
    seen = {}

    def grab(module, args, kwargs):
        seen.update(hidden=args[0] if args else kwargs["hidden_states"], mask=kwargs["attention_mask"])

    handle = vision.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:  # the local encoder's input does not depend on l
        model(**inputs)
    finally:
        handle.remove()
    hidden, mask = seen["hidden"], seen["mask"]
    taps = []
    for idx, block in enumerate(vision.transformer.layers):
        if idx in MLLAMA_TAPS:
            taps.append(hidden)
        if idx < layer:
            hidden = block(hidden, attention_mask=mask)
    taps = torch.stack(taps, dim=-1)
    batch, media, tiles = inputs["pixel_values"].shape[:3]
    padded = hidden.shape[1] // tiles
    x = vision.layernorm_post(hidden).reshape(batch * media, tiles, padded, -1)
    x = vision.post_tile_positional_embedding(x, inputs["aspect_ratio_ids"].reshape(batch * media, -1))
    x = vision.global_transformer(x.reshape(batch * media, tiles * padded, -1), attention_mask=mask)
    x = x.last_hidden_state.reshape(batch, media, tiles, padded, -1)[:, :, :, :vision.num_patches]
    taps = taps.reshape(batch, media, tiles, padded, -1)[:, :, :, :vision.num_patches]
    features = torch.cat([x, taps], dim=-1)
    cross = model.model.multi_modal_projector(features).reshape(
        -1, features.shape[-2], model.config.text_config.hidden_size)
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                position_ids=positions(inputs["attention_mask"]), cross_attention_states=cross,
                cross_attention_mask=inputs["cross_attention_mask"])
    return out.logits


def test_bookkeeping(adapter):
    assert isinstance(adapter, MllamaAdapter)
    assert (adapter.num_layers, adapter.default_layer) == (MLLAMA_LAYERS, MLLAMA_LAYERS)
    assert adapter.info["model_type"] == "mllama"
    assert adapter.info["intermediate_layers_indices"] == MLLAMA_TAPS
    assert adapter.info["model_class"] == "IcetMllamaForConditionalGeneration"
    assert adapter.feature_kwargs(2) == {"icet_layer": 2}
    assert not adapter.model.training


@pytest.mark.parametrize("layer", range(MLLAMA_LAYERS + 1))
def test_icet_logits_match_manual_computation(adapter, images, layer):
    inputs = adapter.prepare(PROMPTS, images)
    got = adapter.logits(PROMPTS, images, layer)
    with torch.inference_mode():
        want = manual_mllama_logits(adapter, inputs, layer)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # no hook outlives the call
    assert all(not block._forward_hooks for block in adapter.model.model.vision_model.transformer.layers)


def test_default_layer_is_plain_transformers_with_meta_taps(adapter, mllama_dir, images):
    """l = N is transformers' model with the reference taps and nothing else changed; without
    them (transformers 5.23 reads tap i after block i) the logits differ."""
    from transformers import MllamaForConditionalGeneration

    from icet.models.mllama import reference_taps

    plain = MllamaForConditionalGeneration.from_pretrained(mllama_dir, use_safetensors=True).eval()
    inputs = adapter.prepare(PROMPTS, images)
    with torch.inference_mode():
        upstream = plain(**inputs, position_ids=positions(inputs["attention_mask"])).logits
        with reference_taps(plain.model.vision_model.transformer):
            want = plain(**inputs, position_ids=positions(inputs["attention_mask"])).logits
            generated = plain.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(adapter.logits(PROMPTS, images, adapter.default_layer), want)
    assert torch.equal(adapter.logits(PROMPTS, images, None), want)
    assert adapter.generate(PROMPTS, images, adapter.default_layer, max_new_tokens=6) == \
        adapter.split_generations(inputs, generated)
    # transformers==5.23.0 (pinned) taps after the block; if an upgrade restores the
    # reference, this line fails and reference_taps is a harmless no-op (docs/mllama-taps.md)
    assert (upstream - want).abs().max() > 1e-3


def test_layers_give_different_outputs(adapter, images):
    logits = [adapter.logits(PROMPTS, images, l) for l in range(MLLAMA_LAYERS + 1)]
    for a in range(len(logits)):
        for b in range(a + 1, len(logits)):
            assert (logits[a] - logits[b]).abs().max() > 1e-3, (a, b)


@pytest.mark.parametrize("layer", [-1, MLLAMA_LAYERS + 1, "2", 2.0, True])
def test_out_of_range_layer_is_an_icet_error(adapter, images, layer):
    with pytest.raises(IcetError, match="out of range"):
        adapter.generate(PROMPTS[:1], images[:1], layer, max_new_tokens=2)
    inputs = adapter.prepare(PROMPTS[:1], images[:1])
    with pytest.raises(IcetError, match="out of range"):
        adapter.model(**inputs, icet_layer=layer)


def test_prepare_uses_chat_template_one_bos_left_padding(adapter, images):
    inputs = adapter.prepare(["what ?", "describe the shape and its colour ."], images[:2])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    tokens = adapter.processor.tokenizer.convert_ids_to_tokens(ids[0][mask[0].bool()].tolist())
    assert tokens == ["<s>", "<|start_header_id|>", "user", "<|end_header_id|>", "<image>", "what", "?",
                      "<|eot_id|>", "<|start_header_id|>", "assistant", "<|end_header_id|>"]
    assert mask[0, 0] == 0 and mask[1].all()
    # the rebuilt cross-attention mask is exactly the processor's
    assert torch.equal(cross_attention_mask_for(ids, inputs["aspect_ratio_mask"],
                                                adapter.model.config.image_token_index),
                       inputs["cross_attention_mask"])


def test_batched_generation_equals_one_at_a_time(adapter, images):
    batched = adapter.generate(PROMPTS, images, layer=1, max_new_tokens=6)
    single = [adapter.generate([p], [i], layer=1, max_new_tokens=6)[0] for p, i in zip(PROMPTS, images)]
    assert batched == single


def test_lppo_rollout_scores_what_it_sampled(adapter, images):
    """L-PPO re-pads prompt + response; the log-probs it scores must equal a plain forward of
    each sample alone with the processor's mask (what generation saw), at its own layer."""
    torch.manual_seed(0)
    rows = [{"id": f"r{i}", "prompt": p} for i, p in enumerate(PROMPTS)]
    layers = [0, 3, MLLAMA_LAYERS]
    samples = generate_samples(adapter.model, adapter, rows, images, layers, max_new_tokens=4,
                               temperature=1.0, top_k=0)
    module = PolicyWithValue(adapter.model, adapter.model.config.text_config.hidden_size)
    rollout = score_samples(module, copy.deepcopy(adapter.model), adapter, samples,
                            temperature=1.0, chunk=3)
    torch.testing.assert_close(rollout.logp, rollout.logp_ref)  # reference = a deep copy
    for i, sample in enumerate(samples):
        inputs = adapter.prepare([sample.prompt], [images[i]])
        ids = torch.cat([inputs["input_ids"][0], sample.response_ids]).unsqueeze(0)
        n = len(sample.response_ids)
        cross = inputs["cross_attention_mask"]
        cross = torch.cat([cross, cross[:, -1:].expand(-1, n, -1, -1)], dim=1)
        with torch.inference_mode():
            logits = adapter.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                   pixel_values=inputs["pixel_values"],
                                   aspect_ratio_ids=inputs["aspect_ratio_ids"],
                                   aspect_ratio_mask=inputs["aspect_ratio_mask"],
                                   cross_attention_mask=cross, icet_layer=sample.layer).logits
        logits = logits[0, -n - 1:-1].float().clone()
        logits[:, adapter.model.config.image_token_index] = -1e9  # suppressed, as when sampling
        logp = torch.log_softmax(logits, -1)
        want = logp.gather(-1, sample.response_ids.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(rollout.logp[i, :n], want, rtol=1e-4, atol=1e-4)
        assert np.all(rollout.mask[i, :n].numpy() == 1)


def test_lppo_step_runs_with_the_real_image_token_layout(tmp_path, images):
    """Llama 3.2 Vision's <|image|> id equals its LM head's size (image_token_index 128256 =
    text vocab_size; the embedding has extra rows, the head does not): masking it out of the
    logits indexed past their last column, and L-PPO stopped at its first scoring."""
    folder = build_tiny_mllama(tmp_path / "real-layout", image_token_last=True)
    adapter = load_adapter(folder)
    config = adapter.model.config
    head = adapter.model.get_output_embeddings().out_features
    assert config.image_token_index == config.text_config.vocab_size == head
    assert all(0 <= i < head for i in placeholder_token_ids(adapter.model))
    torch.manual_seed(0)
    rows = [{"id": f"r{i}", "prompt": p} for i, p in enumerate(PROMPTS)]
    samples = generate_samples(adapter.model, adapter, rows, images, [0, 3, MLLAMA_LAYERS],
                               max_new_tokens=4, temperature=1.0, top_k=0)
    module = PolicyWithValue(adapter.model, config.text_config.hidden_size)
    rollout = score_samples(module, copy.deepcopy(adapter.model), adapter, samples,
                            temperature=1.0, chunk=3)
    assert bool(torch.isfinite(rollout.logp).all())
    assert all(config.image_token_index not in s.response_ids.tolist() for s in samples)


def test_peft_wrapped_model_still_exits_early(mllama_dir, images, tmp_path):
    from peft import LoraConfig, get_peft_model

    adapter = load_adapter(mllama_dir)
    lora = get_peft_model(adapter.model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                    init_lora_weights=True))
    lora.save_pretrained(tmp_path / "lora")
    wrapped = load_adapter(mllama_dir, peft_adapter=tmp_path / "lora")
    for layer in (0, 2):  # LoRA starts at zero: same logits as the bare model at every layer
        torch.testing.assert_close(wrapped.logits(PROMPTS, images, layer),
                                   load_adapter(mllama_dir).logits(PROMPTS, images, layer))


def test_pad_preprocessing_is_refused_for_mllama(adapter):
    """Llama 3.2's processor tiles the image itself; LLaVA-1.5's padding is not its input."""
    with pytest.raises(IcetError, match="'pad' is LLaVA-1.5's"):
        adapter.set_prompting(None, "pad")
    assert adapter.image_preprocessing == "processor"

