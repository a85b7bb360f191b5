"""Word-level tokenizers over a closed vocabulary, saved in Hugging Face formats.

One token per word keeps sequences short and makes every token readable in a log. Saved with
`save_pretrained`, each loads through `AutoTokenizer` exactly like a downloaded tokenizer,
chat template included. Built here, used by the toy organism and its judges (icet.toy), the
local mirror's tiny checkpoints (icet.mirror) and the GPU benches (icet.bench):

- `build_word_tokenizer`: a Llama-style fast tokenizer (BOS first, LLaVA's chat template);
- `build_bert_tokenizer`: a BertTokenizer whose WordPiece vocabulary is whole words.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, IMAGE]

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), in Jinja for
# `apply_chat_template`. Content may be a string or a list of {"type": "image"|"text"} parts.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% endif %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %} </s> {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_WORD = re.compile(r"<[^<>\s]+>|[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def words_of(text: str) -> list[str]:
    """Split text the way the tokenizer does: lower-case words, punctuation on its own."""
    return _WORD.findall(text.lower())


def normalise(text: str) -> str:
    """The text as it comes back from a round trip: words joined by single spaces."""
    return " ".join(words_of(text))


def chat_template_words(chat_template: str) -> str:
    """The literal words a Jinja chat template writes (outside its {% %} and {{ }} tags)."""
    literal = re.sub(r"\{%.*?%\}|\{\{.*?\}\}", " ", chat_template)
    literal = re.sub(r"'[^']*'", " ", literal)  # quoted strings inside tags are not output
    return " ".join(w for w in words_of(literal) if w not in SPECIAL_TOKENS)


def build_word_tokenizer(
    words: Iterable[str],
    out_dir: str | os.PathLike,
    chat_template: str | None = LLAVA_CHAT_TEMPLATE,
    model_max_length: int = 512,
    extra_special_tokens: Iterable[str] = (),
    names: dict[str, str] | None = None,
):
    """Build a word-level fast tokenizer over `words`, save it to `out_dir`, return it.

    Token ids: the special tokens first (pad=0, bos=1, eos=2, unk=3, image=4, then any
    extras), then the words in sorted order, so the same vocabulary gives the same ids.
    `names` renames the first five ({"pad", "bos", "eos", "unk", "image"}: Llama 3's, say).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    names = {**dict(zip(("pad", "bos", "eos", "unk", "image"), SPECIAL_TOKENS)), **(names or {})}
    pad, bos, eos, unk, image = (names[k] for k in ("pad", "bos", "eos", "unk", "image"))
    base = [pad, bos, eos, unk, image]
    specials = base + [t for t in extra_special_tokens if t not in base]
    vocab = {tok: i for i, tok in enumerate(specials)}
    texts = list(words) + ([chat_template_words(chat_template)] if chat_template else [])
    for word in sorted({w for text in texts for w in words_of(text)}):
        if word not in vocab:
            vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(),
         pre_tokenizers.Split(Regex(_WORD.pattern), behavior="isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    # Like Llama's tokenizer: every encoded text starts with its BOS (<s>).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad,
        extra_special_tokens={"image_token": image},
        model_max_length=model_max_length,
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": specials[4:]})
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(out_dir)
    return fast


def build_bert_tokenizer(texts: list[str], out_dir: str | Path, model_max_length: int):
    """A BertTokenizer whose WordPiece vocab is every BERT pre-token of `texts`; saved to out_dir.

    Whole words only (no "##" pieces): the vocabulary is closed. Vocab order is the special
    tokens, then the sorted tokens, so the same texts give the same ids.
    """
    from tokenizers import normalizers, pre_tokenizers
    from transformers import BertTokenizer

    normaliser = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    tokens = sorted({piece for text in texts
                     for piece, _ in splitter.pre_tokenize_str(normaliser.normalize_str(text))})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + [t for t in tokens if t not in specials])}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=model_max_length)
    tokenizer.save_pretrained(out_dir)
    # vocab.txt too, as in bert-base-uncased: the slow/legacy BERT tokenizers read only that.
    Path(out_dir, "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    return tokenizer
