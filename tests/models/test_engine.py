"""The fast ICET engine gives token-identical greedy responses to the naive generate() loop.

fp32 on CPU, every layer, on tiny LLaVA, tiny LLaVA-NeXT, a LoRA-wrapped LLaVA (the aligned
variant), a toy-architecture LLaVA with the toy tokenizer, and tiny Llama 3.2 Vision (Mllama:
image by cross-attention, ICET-l = local-encoder exit), bare and LoRA-wrapped. Batch sizes
are chosen so that layer groups, prompt chunks and padding differ between the engines.
"""

from __future__ import annotations


import pytest
import torch


# Token identity must hold on every CPU kernel path (scripts/test-kernel-paths reruns these).
pytestmark = pytest.mark.numerics

from icet.engine import plan_batch, plan_groups, supports_fast, sweep_layers  # noqa: E402
from icet.errors import IcetError  # noqa: E402
from icet.models.loading import load_adapter  # noqa: E402
from tiny_models import PROMPTS, build_tiny_llava, build_tiny_llava_next, noise_image  # noqa: E402

# Image sizes differ so LLaVA-NeXT picks different tile grids (and token counts) per row.
IMAGES = [noise_image(i, 24 + 9 * i, 40 - 3 * i) for i in range(7)]
TEXTS = [PROMPTS[i % len(PROMPTS)] for i in range(7)]


def both(adapter, prompts, images, max_new_tokens=6, batch_size=11, naive_batch_size=3):
    layers = list(range(adapter.num_layers + 1))
    fast = sweep_layers(adapter, prompts, images, layers, engine="fast",
                        max_new_tokens=max_new_tokens, batch_size=batch_size)
    naive = sweep_layers(adapter, prompts, images, layers, engine="naive",
                         max_new_tokens=max_new_tokens, naive_batch_size=naive_batch_size)
    return fast, naive


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return load_adapter(build_tiny_llava(tmp_path_factory.mktemp("llava")))


def word_ending_rows_at_many_steps(results) -> str:
    """The response word whose first occurrence falls at the most different positions."""
    positions: dict[str, set[int]] = {}
    for rows in results.values():
        for row in rows:
            words = row["response"].split()
            for word in set(words):
                positions.setdefault(word, set()).add(words.index(word))
    return max(sorted(positions), key=lambda word: len(positions[word]))


def test_llava_every_layer_token_identical(llava):
    fast, naive = both(llava, TEXTS, IMAGES)
    assert fast == naive
    assert len({row["response"] for rows in fast.values() for row in rows}) > 1  # not degenerate


@pytest.mark.parametrize("name", ["llava", "mllama"])
def test_identical_when_rows_stop_at_different_steps(name, request, monkeypatch):
    """Make a frequent response word the EOS, so rows leave the fast batch at different steps
    (Mllama's rows take their cross-attention states, mask and cache rows with them)."""
    adapter = request.getfixturevalue(name)
    fast, _ = both(adapter, TEXTS, IMAGES)
    word = word_ending_rows_at_many_steps(fast)
    eos = adapter.processor.tokenizer.convert_tokens_to_ids(word)
    monkeypatch.setattr(adapter.model.generation_config, "eos_token_id", eos)
    fast, naive = both(adapter, TEXTS, IMAGES)
    assert fast == naive
    lengths = {row["n_response_tokens"] for rows in fast.values() for row in rows}
    finished = [row["finished"] for rows in fast.values() for row in rows]
    assert any(finished) and not all(finished) and len(lengths) > 2


def test_llava_system_prompt_and_pad_token_identical(tmp_path):
    """The fast engine sees the same prompt text (system turn) and pixels (padded) as generate."""
    from icet.models.base import VICUNA_SYSTEM_PROMPT
    from tiny_models import LLAVA_HF_CHAT_TEMPLATE

    model_dir = build_tiny_llava(tmp_path / "llava")
    adapter = load_adapter(model_dir, system_prompt=VICUNA_SYSTEM_PROMPT, image_preprocessing="pad")
    plain = load_adapter(model_dir)
    for a in (adapter, plain):
        a.processor.chat_template = LLAVA_HF_CHAT_TEMPLATE
    fast, naive = both(adapter, TEXTS, IMAGES)
    assert fast == naive
    assert fast != both(plain, TEXTS, IMAGES)[0]  # the settings reach the model


def test_llava_next_every_layer_token_identical(tmp_path):
    adapter = load_adapter(build_tiny_llava_next(tmp_path / "next"))
    assert adapter.model_type == "llava_next" and supports_fast(adapter)
    fast, naive = both(adapter, TEXTS, IMAGES)
    assert fast == naive
    # The tiles really differ: prompt lengths vary with the image size.
    assert len({row["n_prompt_tokens"] for row in fast[0]}) > 1


def test_lora_wrapped_model_token_identical(tmp_path):
    """The aligned variant: a peft LoRA (random, non-zero) on the language model."""
    from peft import LoraConfig, get_peft_model

    from icet.models.llava import LlavaAdapter
    from icet.models.loading import load_adapter as load

    base = load(build_tiny_llava(tmp_path / "base", initializer_range=0.2))
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                        target_modules=r".*language_model.*\.(q_proj|v_proj)")
    torch.manual_seed(1)
    wrapped = get_peft_model(base.model, config).eval()
    adapter = LlavaAdapter(wrapped, base.processor, name="lora")
    fast, naive = both(adapter, TEXTS[:4], IMAGES[:4])
    assert fast == naive


def test_toy_architecture_token_identical(tmp_path):
    """The toy organism's architecture (12-layer CLIP, 4-layer Llama) and tokenizer, random weights."""
    from icet.toy.bench import build_random_toy, noise_dataset

    adapter = load_adapter(build_random_toy(tmp_path / "toy"))
    assert adapter.num_layers == 12
    prompts, images = noise_dataset(5, seed=2)
    fast, naive = both(adapter, prompts, images, max_new_tokens=4, batch_size=16, naive_batch_size=2)
    assert fast == naive and sorted(fast) == list(range(13))


def test_layers_complete_group_by_group(llava):
    """on_layer fires per layer as its group finishes, in order: what makes shards resumable."""
    seen = []
    sweep_layers(llava, TEXTS, IMAGES, [4, 0, 2], engine="fast", max_new_tokens=3, batch_size=14,
                 on_layer=lambda layer, rows: seen.append((layer, len(rows))))
    assert seen == [(4, 7), (0, 7), (2, 7)]
    assert plan_groups(7, [4, 0, 2], 14) == [[4, 0], [2]]
    assert plan_groups(70, [0, 1, 2], 14) == [[0], [1], [2]]  # a layer alone fills the batch


def test_bad_settings_are_named(llava):
    with pytest.raises(IcetError, match="engine 'turbo'"):
        sweep_layers(llava, TEXTS, IMAGES, [0], engine="turbo", max_new_tokens=2)
    with pytest.raises(IcetError, match="batch_size must be an integer >= 1 or 'auto'"):
        plan_batch(0, llava, TEXTS, [0], 10)
    assert plan_batch("auto", llava, TEXTS, [0], 10)[0] >= 1
    with pytest.raises(IcetError, match="out of range"):
        sweep_layers(llava, TEXTS, IMAGES, [0, 9], engine="fast", max_new_tokens=2)


def test_adapter_without_fast_path_runs_naive(llava, monkeypatch):
    monkeypatch.setattr(type(llava), "supports_fast_sweep", False)
    monkeypatch.setattr(type(llava), "layer_embeddings", None)  # would fail if called
    assert not supports_fast(llava)
    out = sweep_layers(llava, TEXTS[:2], IMAGES[:2], [1], engine="fast", max_new_tokens=3)
    assert len(out[1]) == 2


@pytest.fixture(scope="module")
def mllama(tmp_path_factory):
    from tiny_models import build_tiny_mllama

    return load_adapter(build_tiny_mllama(tmp_path_factory.mktemp("mllama")))


def test_mllama_every_layer_token_identical(mllama):
    """Cross-attention path: prompts of different lengths (left padding) and images with 1 to 4
    tiles (padding tiles), every local-encoder exit l = 0..N, layer groups != naive batches."""
    assert supports_fast(mllama)
    fast, naive = both(mllama, TEXTS, IMAGES)
    assert fast == naive and sorted(fast) == list(range(mllama.num_layers + 1))
    assert len({row["response"] for rows in fast.values() for row in rows}) > 1
    assert len({fast[layer][0]["response"] for layer in fast}) > 1  # the layer matters


def test_mllama_fast_runs_the_local_encoder_once_per_batch(mllama):
    """The saving itself: one local-encoder pass per prompt batch for all layers, and the
    global encoder once per layer below N (layer N reuses the vision model's own output)."""
    vision = mllama.model.model.vision_model
    calls = {"local": 0, "global": 0}
    handles = [vision.transformer.register_forward_hook(lambda *a: calls.__setitem__("local", calls["local"] + 1)),
               vision.global_transformer.register_forward_hook(
                   lambda *a: calls.__setitem__("global", calls["global"] + 1))]
    try:
        sweep_layers(mllama, TEXTS, IMAGES, list(range(mllama.num_layers + 1)), engine="fast",
                     max_new_tokens=2, batch_size=7 * (mllama.num_layers + 1))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {"local": 1, "global": mllama.num_layers + 1}


def test_mllama_lora_wrapped_token_identical(mllama, tmp_path):
    from peft import LoraConfig, get_peft_model

    from icet.models.mllama import MllamaAdapter
    from tiny_models import build_tiny_mllama

    base = load_adapter(build_tiny_mllama(tmp_path / "base"))
    torch.manual_seed(1)
    wrapped = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                    target_modules=r".*language_model.*\.(q_proj|v_proj)")).eval()
    adapter = MllamaAdapter(wrapped, base.processor, name="lora")
    fast, naive = both(adapter, TEXTS[:4], IMAGES[:4])
    assert fast == naive
    assert fast != both(mllama, TEXTS[:4], IMAGES[:4])[0]  # the LoRA is live in both engines


