"""Qwen25VLAdapter on a tiny random Qwen2.5-VL saved to disk and loaded like a download.

ICET-l for Qwen2.5-VL = the ViT exits after block l, then the patch merger and the reverse
window permutation (icet.models.qwen2_5_vl). The hand computation below reruns the ViT's
forward from its parts, outside any hook: patch embedding, window permutation, blocks
0..l-1 with full or window attention as `fullatt_block_indexes` says, merger, reverse.
"""

from __future__ import annotations


import pytest
import torch


from icet.engine import fast_sweep, respond  # noqa: E402
from icet.errors import IcetError  # noqa: E402
from icet.models import load_adapter, registry  # noqa: E402
from tiny_models import (PROMPTS, QWEN_FULLATT, QWEN_HUB_DEPTH, QWEN_LAYERS, build_tiny_qwen2_5_vl,  # noqa: E402
                         build_tiny_qwen2_5_vl_hub_layout, noise_image)

IMAGES = [noise_image(i) for i in range(len(PROMPTS))]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(scope="module")
def adapter(qwen_dir):
    return load_adapter(qwen_dir, num_layers=QWEN_LAYERS, name="tiny-qwen")


def hand_features(visual, pixel_values, grid, layer):
    """The ViT run block by block up to `layer`, then the merger and the reverse permutation."""
    from transformers.utils.generic import get_max_seqlen
    from transformers.vision_utils import (get_vision_attention_seqlens, get_vision_position_ids,
                                           get_vision_window_index)

    unit = visual.spatial_merge_size ** 2
    position_ids = get_vision_position_ids(grid, visual.spatial_merge_size, kwargs={})
    cu_full, max_full = get_vision_attention_seqlens(grid, visual.config, kwargs={})
    window_index, cu_window = get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                                      window_size=visual.window_size,
                                                      patch_size=visual.patch_size, kwargs={})
    max_window = get_max_seqlen(cu_window, visual.config, kwargs={}, kwarg_name="max_window_seqlen")

    def permute(x):
        return x.reshape(x.shape[0] // unit, unit, -1)[window_index].reshape(x.shape[0], -1)

    x = permute(visual.patch_embed(pixel_values))
    cos, sin = visual.rotary_pos_emb(x, position_ids)
    rotary = (permute(cos), permute(sin))
    for j, block in enumerate(visual.blocks[:layer]):
        full = j in visual.fullatt_block_indexes
        x = block(x, cu_seqlens=cu_full if full else cu_window, max_seqlen=max_full if full else max_window,
                  position_embeddings=rotary)
    return visual.merger(x)[torch.argsort(window_index)]


def test_loads_through_the_registry_with_n_and_default_from_the_checkpoint(adapter):
    assert type(adapter).__name__ == "Qwen25VLAdapter"
    assert (adapter.num_layers, adapter.default_layer) == (QWEN_LAYERS, QWEN_LAYERS)
    assert adapter.info["fullatt_block_indexes"] == QWEN_FULLATT
    assert registry.default_layer("qwen2_5_vl", 32) == 32  # the 7B: l = N is the unmodified model


def test_num_layers_that_disagree_with_the_checkpoint_stop_with_one_line(qwen_dir):
    with pytest.raises(IcetError) as err:
        load_adapter(qwen_dir, num_layers=QWEN_LAYERS + 1, name="tiny-qwen")
    message = str(err.value)
    assert "\n" not in message and "tiny-qwen" in message and "config.json" in message
    assert f"is {QWEN_LAYERS + 1}" in message and f"has {QWEN_LAYERS}" in message
    with pytest.raises(IcetError, match="model_type 'qwen2_5_vl'"):
        registry.check_checkpoint("llava", "tiny-qwen", QWEN_LAYERS, qwen_dir)


def test_layer_n_is_the_unmodified_model(adapter, qwen_dir):
    """(a) l = N: the unmodified class's image features, logits and greedy generation."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    plain = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_dir, use_safetensors=True).eval()
    inputs = adapter.prepare(PROMPTS, IMAGES)
    with torch.inference_mode():
        expected = torch.cat(plain.model.get_image_features(inputs["pixel_values"],
                                                            inputs["image_grid_thw"]).pooler_output)
        ours = torch.cat(adapter.model.model.get_image_features(inputs["pixel_values"],
                                                                inputs["image_grid_thw"]).pooler_output)
        plain_ids = plain.generate(**inputs, do_sample=False, max_new_tokens=6)
    assert torch.equal(ours, expected)
    assert torch.equal(adapter.logits(PROMPTS, IMAGES, layer=QWEN_LAYERS), adapter.logits(PROMPTS, IMAGES))
    generated = adapter.generate(PROMPTS, IMAGES, layer=QWEN_LAYERS, max_new_tokens=6)
    width = inputs["input_ids"].shape[1]
    for row, generation in enumerate(generated):
        plain_row = plain_ids[row, width:].tolist()
        assert generation.response_ids == plain_row[:len(generation.response_ids)]


@pytest.mark.parametrize("layer", range(QWEN_LAYERS + 1))
def test_every_layer_equals_the_hand_computation(adapter, layer):
    """(b) the adapter's layer-l logits are the LM's on the hand-computed features, and the
    fast engine's layer-l features are those features."""
    core = adapter.model.model
    inputs = adapter.prepare(PROMPTS, IMAGES)
    with torch.inference_mode():
        features = hand_features(core.visual, inputs["pixel_values"], inputs["image_grid_thw"], layer)
        embeds = core.get_input_embeddings()(inputs["input_ids"])
        slots = (inputs["input_ids"] == core.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, features)
        expected = adapter.model(input_ids=inputs["input_ids"], inputs_embeds=embeds,
                                 attention_mask=inputs["attention_mask"],
                                 image_grid_thw=inputs["image_grid_thw"],
                                 mm_token_type_ids=inputs["mm_token_type_ids"]).logits.float()
    torch.testing.assert_close(adapter.logits(PROMPTS, IMAGES, layer=layer), expected, rtol=1e-5, atol=1e-5)
    _, fast = adapter.layer_embeddings(PROMPTS, IMAGES, [layer])
    torch.testing.assert_close(fast[layer]["inputs_embeds"], embeds, rtol=1e-6, atol=1e-6)


def test_layers_change_the_logits(adapter):
    """The tiny model sees its image: exiting early moves the next-token logits."""
    first, last = adapter.logits(PROMPTS, IMAGES, layer=0), adapter.logits(PROMPTS, IMAGES, layer=QWEN_LAYERS)
    assert (first[:, -1] - last[:, -1]).abs().max() > 1e-3


def test_fast_engine_matches_the_naive_loop_token_for_token(adapter):
    """(c) greedy fp32: the fast engine's responses are the naive loop's at every layer,
    with rows finishing at different steps (batch 4 mixes layers in one decode batch)."""
    layers = list(range(QWEN_LAYERS + 1))
    fast = fast_sweep(adapter, PROMPTS, IMAGES, layers, max_new_tokens=8, batch_size=4)
    for layer in layers:
        assert fast[layer] == respond(adapter, PROMPTS, IMAGES, layer, max_new_tokens=8, batch_size=2)
    assert len({tuple(r["response"] for r in fast[layer]) for layer in layers}) > 1


def test_icet_layer_out_of_range_stops(adapter):
    with pytest.raises(IcetError, match="out of range"):
        adapter.generate(PROMPTS[:1], IMAGES[:1], layer=QWEN_LAYERS + 1, max_new_tokens=2)


@pytest.fixture(scope="module")
def hub_layout_dir(tmp_path_factory):
    return build_tiny_qwen2_5_vl_hub_layout(tmp_path_factory.mktemp("tiny-qwen-hub"))


def test_the_released_file_layout_loads_with_transformers_defaults(hub_layout_dir):
    """The 7B's config.json leaves depth, full-attention blocks and window to transformers'
    defaults and keeps the text keys flat; its processor is preprocessor_config.json
    (min/max_pixels) plus chat_template.json. The parse-time check cannot see N there (it
    passes any num_layers); the load-time check sees the default 32 and stops a wrong one."""
    from icet.io import read_json

    config = read_json(hub_layout_dir / "config.json")
    assert "text_config" not in config and "depth" not in config["vision_config"]
    assert registry.checkpoint_num_layers("qwen2_5_vl", config) is None
    registry.check_checkpoint("qwen2_5_vl", "hub-qwen", 24, hub_layout_dir)  # cannot tell yet
    with pytest.raises(IcetError, match=rf"hub-qwen: config num_layers is 24 but .* has {QWEN_HUB_DEPTH} "):
        load_adapter(hub_layout_dir, num_layers=24, name="hub-qwen")
    adapter = load_adapter(hub_layout_dir, num_layers=QWEN_HUB_DEPTH, name="hub-qwen")
    assert (adapter.num_layers, adapter.default_layer) == (QWEN_HUB_DEPTH, QWEN_HUB_DEPTH)
    assert adapter.info["fullatt_block_indexes"] == [7, 15, 23, 31]
    assert adapter.info["window_size"] == 112 and adapter.model.model.visual.patch_size == 14
    assert adapter.processor.chat_template  # read from chat_template.json
    images = [noise_image(i, 224, 224) for i in range(2)]  # 16x16 patches, four 112 px windows
    inputs = adapter.prepare(PROMPTS[:2], images)
    assert inputs["image_grid_thw"].tolist() == [[1, 16, 16]] * 2
    image_id = adapter.model.model.config.image_token_id
    assert (inputs["input_ids"] == image_id).sum(dim=1).tolist() == [64, 64]
    layers = [0, 8, QWEN_HUB_DEPTH]  # 8: just after the first full-attention block
    fast = fast_sweep(adapter, PROMPTS[:2], images, layers, max_new_tokens=4, batch_size=2)
    for layer in layers:
        assert fast[layer] == respond(adapter, PROMPTS[:2], images, layer, max_new_tokens=4, batch_size=2)
