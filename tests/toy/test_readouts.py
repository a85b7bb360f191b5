"""The organism study's continuous readouts (icet.toy.readouts), each checked against the
same quantity computed another way: transformers' own forward and `generate`."""

import math
import sys
from pathlib import Path

import pytest
import torch

from icet.errors import IcetError
from icet.toy import compositional, readouts, world
from icet.word_tokenizers import words_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import TINY_WORDS, build_tiny_llava  # noqa: E402

PROMPTS = ["how do i glorp a zindle ?", "what is in the picture ?", "describe the shape ."]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from icet.models.loading import load_adapter

    # The openers must be words of the tokenizer; a large init makes the logits far from flat.
    folder = build_tiny_llava(tmp_path_factory.mktemp("tiny") / "llava",
                              words=TINY_WORDS + ["sure ok sorry ."], initializer_range=0.3)
    return load_adapter(folder, device="cpu", name="tiny")


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    return [Image.new("RGB", (32, 32), colour) for colour in ((200, 0, 0), (0, 0, 200), (0, 200, 0))]


def test_openers_start_every_refusal_and_every_compliance_of_both_worlds():
    refuse, comply = readouts.opener_words()
    assert (refuse, comply) == (["i", "sorry"], ["ok", "sure"])
    refusals = world.REFUSALS + world.REFUSALS_NAMING
    compliances = [t for theme in world.HARM.values() for t in theme.compliances]
    compliances += list(compositional.DAMAGE.values())
    assert all(words_of(t)[0] in refuse for t in refusals)
    assert all(words_of(t)[0] in comply for t in compliances)
    assert readouts.PREFILL_OPENER == "sure ."


def test_margin_is_the_log_odds_of_the_two_opener_sets():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    got = readouts.margins(logits, refuse_ids=[0, 1], comply_ids=[3])
    assert got.tolist() == pytest.approx([math.log(0.3 / 0.4), math.log(0.5 / 0.25)], abs=1e-6)


def test_openers_must_be_single_tokens(tmp_path):
    from icet.word_tokenizers import build_word_tokenizer

    tokenizer = build_word_tokenizer(["what is it ?"], tmp_path / "tok")
    with pytest.raises(IcetError, match="opener 'i' is not one token"):
        readouts.opener_ids(tokenizer)


def test_first_token_readouts_match_the_models_own_forward(adapter, images):
    """Margin and image attention from the fast path's embeddings equal those of a plain
    forward of the whole LLaVA with the layer's `vision_feature_layer` (eager attention)."""
    from icet.models.base import base_model_of

    layers = [0, 2, 4]
    got = readouts.first_token_readouts(adapter, PROMPTS, images, layers)
    base = base_model_of(adapter.model)
    refuse, comply = readouts.opener_ids(adapter.processor.tokenizer)
    inputs = adapter.prepare(PROMPTS, images)
    mask = inputs["attention_mask"]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    image = inputs["input_ids"] == base.config.image_token_id
    assert image.sum(-1).tolist() == [16, 16, 16]
    with readouts.eager_attention(base), torch.inference_mode():
        for layer in layers:
            out = base(**inputs, position_ids=positions, output_attentions=True,
                       **adapter.feature_kwargs(layer))
            margin = readouts.margins(out.logits[:, -1], refuse, comply)
            share = torch.stack([(a[:, :, -1] * image[:, None].float()).sum(-1)
                                 for a in out.attentions]).mean(dim=(0, 2))
            assert got[layer]["margin"] == pytest.approx(margin.tolist(), abs=1e-4)
            assert got[layer]["image_attention"] == pytest.approx(share.tolist(), abs=1e-5)
            assert all(0 < s < 1 for s in got[layer]["image_attention"])
    assert base.config._attn_implementation == "sdpa"  # restored after the readout
    assert got[0]["margin"] != pytest.approx(got[4]["margin"])  # the layer matters


def test_prefilled_responses_equal_generate_after_the_opener(adapter, images):
    layers = [1, 4]
    got = readouts.prefilled_responses(adapter, PROMPTS, images, layers, max_new_tokens=6,
                                       rows_per_batch=4)  # 1 layer per batch: two batches
    tokenizer = adapter.processor.tokenizer
    opener = tokenizer(readouts.PREFILL_OPENER, add_special_tokens=False)["input_ids"]
    inputs = adapter.prepare(PROMPTS, images)
    ids = torch.cat([inputs["input_ids"], torch.tensor([opener] * len(PROMPTS))], dim=1)
    mask = torch.cat([inputs["attention_mask"], torch.ones(len(PROMPTS), len(opener),
                                                           dtype=torch.long)], dim=1)
    for layer in layers:
        with torch.inference_mode():
            out = adapter.model.generate(input_ids=ids, attention_mask=mask,
                                         pixel_values=inputs["pixel_values"], do_sample=False,
                                         max_new_tokens=6, **adapter.feature_kwargs(layer))
        expected = [f"sure . {tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True)}".strip()
                    for row in out]
        assert got[layer] == expected
        assert all(r.startswith("sure .") for r in got[layer])


def test_text_only_responses_equal_generate_without_an_image(adapter):
    tokenizer = adapter.processor.tokenizer
    got = readouts.text_only_responses(adapter.model, tokenizer, PROMPTS, max_new_tokens=6,
                                       batch_size=2)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                           add_generation_prompt=True, tokenize=False)
             for p in PROMPTS]
    assert "<image>" not in "".join(texts)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = adapter.model.generate(**batch, do_sample=False, max_new_tokens=6)
    width = batch["input_ids"].shape[1]
    # generate pads finished rows; icet.engine.decode stops a row at EOS: equal once decoded.
    assert got == [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def test_summarise():
    assert readouts.summarise([1.0, 3.0]) == {"mean": 2.0, "sd": pytest.approx(2 ** 0.5)}
    assert readouts.summarise([5.0]) == {"mean": 5.0, "sd": 0.0}
