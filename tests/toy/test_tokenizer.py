"""The word-level toy tokenizer: lossless on every text the toy world makes, chat template."""

import numpy as np
import pytest

from icet.toy import world
from icet.word_tokenizers import (BOS, EOS, IMAGE, PAD, UNK, build_word_tokenizer, normalise,
                                words_of)



@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    build_word_tokenizer(world.vocabulary(), out)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


def _world_texts() -> list[str]:
    rng = np.random.default_rng(0)
    texts = list(world.example_texts())
    for req in world.harmful_requests():
        texts += [req.text, world.compliant_response(req, rng), world.refusal(rng, req),
                  world.jailbreak(req, rng)]
    texts += [world.broken_output(rng, world.REFUSALS) for _ in range(200)]
    return texts


def test_words_and_normalise_hand_computed():
    assert words_of("Sure, FIRST grind the glorvex!") == ["sure", ",", "first", "grind", "the",
                                                         "glorvex", "!"]
    assert normalise("  what colour   is the shape?") == "what colour is the shape ?"
    assert words_of("USER: <image> hi") == ["user", ":", "<image>", "hi"]


def test_special_token_ids_are_fixed(tok):
    assert [tok.convert_tokens_to_ids(t) for t in (PAD, BOS, EOS, UNK, IMAGE)] == [0, 1, 2, 3, 4]
    assert tok.pad_token == PAD and tok.eos_token == EOS and tok.padding_side == "left"


def test_round_trip_of_every_world_text_has_no_unk(tok):
    texts = _world_texts()
    assert len(texts) > 2000
    batch = tok(texts).input_ids
    unk = tok.unk_token_id
    for text, ids in zip(texts, batch):
        assert ids[0] == tok.bos_token_id
        assert unk not in ids, text
        assert len(ids) == len(words_of(text)) + 1  # one token per word, plus <s>
        assert tok.decode(ids, skip_special_tokens=True) == normalise(text)


def test_unknown_word_becomes_unk(tok):
    ids = tok("the zzyzzyx shape").input_ids
    assert ids.count(tok.unk_token_id) == 1


def test_chat_template_renders_llava_format(tok):
    user = {"role": "user", "content": [{"type": "image"},
                                        {"type": "text", "text": "what colour is the shape ?"}]}
    prompt = tok.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert prompt == "USER: <image> what colour is the shape ? ASSISTANT:"
    dialogue = [user, {"role": "assistant", "content": "the shape is red ."}]
    full = tok.apply_chat_template(dialogue, tokenize=False)
    assert full == "USER: <image> what colour is the shape ? ASSISTANT: the shape is red . </s> "
    ids = tok(full, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    assert ids.count(tok.convert_tokens_to_ids(IMAGE)) == 1
    assert ids[-1] == tok.eos_token_id


def test_same_vocabulary_gives_same_ids(tmp_path, tok):
    other = build_word_tokenizer(list(reversed(world.vocabulary())), tmp_path)
    assert other.get_vocab() == tok.get_vocab()
