"""The toy organism's tokenizer: a word-level tokenizer over the toy world's vocabulary
(icet.word_tokenizers), saved in Hugging Face format.  Rule `build_toy_tokenizer`.

The toy world has a closed vocabulary, so one token per word keeps sequences short and
makes every token readable in a log.
"""

from __future__ import annotations

import os
from pathlib import Path


def build_word_tokenizer_from_file(vocabulary_txt: str | os.PathLike, out_dir: str | os.PathLike,
                                   log: str | None = None):
    """Build the toy VLM's tokenizer from a vocabulary file (one word per line), atomically."""
    from icet.io import atomic_dir
    from icet.logs import setup_logging
    from icet.word_tokenizers import build_word_tokenizer

    logger = setup_logging(log, "tokenizer")
    words = Path(vocabulary_txt).read_text(encoding="utf-8").split()
    with atomic_dir(out_dir) as tmp:
        tok = build_word_tokenizer(words, tmp)
    logger.info("toy tokenizer: %d tokens -> %s", len(tok), out_dir)
    return tok
