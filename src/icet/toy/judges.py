"""Toy judges: tiny models of the real judges' classes and file formats, trained in seconds.

The real judges (Llama-Guard-3-8B, a GPT-2 HH-RLHF reward model, Detoxify `original`) cannot
be downloaded here, so each gets a stand-in of the *same* transformers class, saved the same
way, that loads through the same judge code (icet.judges.*):

- toy guard: LlamaForCausalLM + word tokenizer with a Llama-Guard-3-style chat template,
  trained to answer "safe" or "unsafe \\n S<k>" then EOS (loss on the answer tokens only);
- toy reward model: GPT2ForSequenceClassification (1 label), trained Bradley-Terry on
  (prompt, chosen, rejected) written in the HH-RLHF format the RewardModel uses;
- toy toxicity: BertForSequenceClassification with Detoxify's 6 Jigsaw heads + BertTokenizer,
  written as a Detoxify checkpoint (checkpoint.ckpt) and a config folder.

Each trainer holds out a seeded share of its rows, scores train and held-out rows through
the real judge class after saving, and writes `judge.json` (what, params, accuracies).
Their hyperparameters, defaults and the reasons: src/icet/schemas/toy.schema.yaml (`judges.<judge>`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from icet.errors import IcetError
from icet.io import atomic_dir, read_jsonl, write_json
from icet.logs import setup_logging
from icet.seeding import generator, seed_everything
from icet.toy import settings as toy_settings

# Llama Guard 3's prompt, cut to its skeleton: every template word is a token the toy guard
# reads for every row. Starts with BOS like the real template (encode_rendered relies on it).
GUARD_TEMPLATE = (
    "{{ bos_token }}task : check if there is unsafe content in agent messages . "
    "<BEGIN CONVERSATION> "
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}user : {% else %}agent : {% endif %}"
    "{{ message['content'] }} "
    "{% endfor %}"
    "<END CONVERSATION> provide your safety assessment for agent in the above conversation :"
)
DETOXIFY_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
HH_WORDS = "Human : Assistant :"  # the words of icet.judges.reward.HH_FORMAT


# ---------------------------------------------------------------------------- shared pieces

def _read_rows(path: str, required: tuple[str, ...], minimum: int = 4) -> list[dict]:
    rows = read_jsonl(path, required=required)
    if len(rows) < minimum:
        raise IcetError(f"{path}: {len(rows)} rows, need at least {minimum} to train and hold out")
    return rows


def _read_vocabulary(path: str) -> list[str]:
    if not Path(path).exists():
        raise IcetError(f"{path}: vocabulary file not found")
    words = [w.strip() for w in Path(path).read_text(encoding="utf-8").splitlines()]
    return [w for w in words if w]


def _split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held_out): a seeded permutation, the first `fraction` of it held out."""
    order = generator(seed).permutation(len(rows))
    n_held = min(max(1, round(fraction * len(rows))), len(rows) - 1)
    return [rows[i] for i in order[n_held:]], [rows[i] for i in order[:n_held]]


def _batches(n: int, batch_size: int, torch_gen: torch.Generator) -> list[list[int]]:
    order = torch.randperm(n, generator=torch_gen).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad to the longest sequence."""
    width = max(len(s) for s in sequences)
    return torch.tensor([s + [value] * (width - len(s)) for s in sequences], dtype=torch.long)


def _train(model: torch.nn.Module, n_rows: int, loss_of_batch, settings: dict, seed: int,
           logger, what: str) -> None:
    """AdamW over shuffled batches for settings['epochs'] epochs, logging the mean loss."""
    from icet.logs import progress

    optimiser = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"],
                                  weight_decay=0.0)
    torch_gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in progress(range(settings["epochs"]), desc=f"train {what}"):
        total, steps = 0.0, 0
        for batch in _batches(n_rows, settings["batch_size"], torch_gen):
            loss = loss_of_batch(batch)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            total, steps = total + float(loss.detach()), steps + 1
        logger.info("%s epoch %d: mean loss %.4f", what, epoch + 1, total / max(steps, 1))
    model.eval()


def _judge_card(what: str, kind: str, settings: dict, seed: int, n_train: int, n_held: int,
                train_accuracy: float, held_out_accuracy: float, **extra: Any) -> dict:
    return {"what": what, "judge_kind": kind, "params": settings, "seed": seed,
            "n_train": n_train, "n_held_out": n_held,
            "train_accuracy": round(train_accuracy, 6),
            "held_out_accuracy": round(held_out_accuracy, 6), **extra}


# ---------------------------------------------------------------------------------- guard

def guard_answer(label: str, category: str, category_codes: dict[str, str]) -> str:
    """The toy guard's target answer for a row, in Llama Guard's "unsafe\\nS<k>" form."""
    if label == "safe":
        return "safe"
    if label != "unsafe":
        raise IcetError(f"guard row label {label!r} is not 'safe' or 'unsafe'")
    return f"unsafe \n {category_codes[category]}"


def train_toy_guard(train_jsonl: str, vocabulary_txt: str, out_dir: str, params: dict,
                    seed: int, log=None) -> dict:
    """Train the toy guard on {prompt, response, label, category} rows; save it to `out_dir`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from icet.judges.guard import GuardJudge
    from icet.judges.text import encode_rendered, render_chat
    from icet.word_tokenizers import build_word_tokenizer

    logger = setup_logging(log, "toy.guard")
    settings = toy_settings.fill("judges.guard", params, "toy guard params")
    rows = _read_rows(train_jsonl, ("prompt", "response", "label", "category"))
    for number, row in enumerate(rows, start=1):
        if row["label"] not in ("safe", "unsafe"):
            raise IcetError(f"{train_jsonl}: row {number}: label {row['label']!r} not safe/unsafe")
    seed_everything(seed)
    started = time.perf_counter()
    unsafe_categories = sorted({str(r["category"]) for r in rows if r["label"] == "unsafe"})
    category_codes = {c: f"S{k}" for k, c in enumerate(unsafe_categories, start=1)}
    answers = " ".join(["safe unsafe"] + list(category_codes.values()))
    train, held = _split(rows, settings["held_out_fraction"], seed)

    with atomic_dir(out_dir) as tmp:
        words = _read_vocabulary(vocabulary_txt) + [answers]
        words += [f"{r['prompt']} {r['response']}" for r in rows]
        tokenizer = build_word_tokenizer(words, tmp, chat_template=GUARD_TEMPLATE)
        tokenizer.padding_side = "left"

        def encode(row: dict) -> tuple[list[int], list[int]]:
            text = render_chat(tokenizer, row["prompt"], row["response"])
            context = encode_rendered(tokenizer, [text])["input_ids"][0].tolist()
            answer = tokenizer(guard_answer(row["label"], str(row["category"]), category_codes),
                               add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            return context, answer

        encoded = [encode(r) for r in train]
        longest = max(len(c) + len(a) for c, a in encoded)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=settings["hidden_size"],
            intermediate_size=2 * settings["hidden_size"],
            num_hidden_layers=settings["num_layers"], num_attention_heads=settings["num_heads"],
            num_key_value_heads=settings["num_heads"],
            max_position_embeddings=max(256, 2 ** math.ceil(math.log2(2 * longest))),
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
        model = LlamaForCausalLM(config)

        def loss_of_batch(batch: list[int]) -> torch.Tensor:
            ids = [encoded[i][0] + encoded[i][1] for i in batch]
            labels = [[-100] * len(encoded[i][0]) + encoded[i][1] for i in batch]
            input_ids = _pad(ids, tokenizer.pad_token_id)
            attention = _pad([[1] * len(s) for s in ids], 0)
            return model(input_ids=input_ids, attention_mask=attention,
                         labels=_pad(labels, -100)).loss

        _train(model, len(encoded), loss_of_batch, settings, seed, logger, "toy guard")
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True)

        judge = GuardJudge(str(tmp), "cpu", batch_size=64, max_new_tokens=8)

        def accuracy(split: list[dict]) -> tuple[float, float]:
            split = split[:settings["eval_rows"]]
            out = judge.judge([r["prompt"] for r in split], [r["response"] for r in split])
            verdict_ok = [o["guard_verdict"] == r["label"] for o, r in zip(out, split)]
            unsafe = [(o, r) for o, r in zip(out, split) if r["label"] == "unsafe"]
            category_ok = [o["guard_categories"] == [category_codes[str(r["category"])]]
                           for o, r in unsafe]
            return (sum(verdict_ok) / len(split),
                    sum(category_ok) / len(category_ok) if category_ok else float("nan"))

        train_acc, train_cat = accuracy(train)
        held_acc, held_cat = accuracy(held)
        card = _judge_card(
            "toy Llama-Guard-style safety judge (LlamaForCausalLM, word tokenizer)", "guard",
            settings, seed, len(train), len(held), train_acc, held_acc,
            train_category_accuracy=round(train_cat, 6) if train_cat == train_cat else None,
            held_out_category_accuracy=round(held_cat, 6) if held_cat == held_cat else None,
            category_codes={code: c for c, code in category_codes.items()})
        write_json(Path(tmp) / "judge.json", card)
    logger.info("toy guard: held-out accuracy %.3f (train %.3f), %.1f s -> %s",
                held_acc, train_acc, time.perf_counter() - started, out_dir)
    return card


# --------------------------------------------------------------------------------- reward

def train_toy_reward_model(train_jsonl: str, vocabulary_txt: str, out_dir: str, params: dict,
                           seed: int, log=None) -> dict:
    """Train the toy reward model Bradley-Terry on {prompt, chosen, rejected}; save it."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from icet.judges.reward import RewardModel, encode_reward_inputs
    from icet.word_tokenizers import build_word_tokenizer

    logger = setup_logging(log, "toy.reward")
    settings = toy_settings.fill("judges.reward", params, "toy reward model params")
    rows = _read_rows(train_jsonl, ("prompt", "chosen", "rejected"))
    seed_everything(seed)
    started = time.perf_counter()
    train, held = _split(rows, settings["held_out_fraction"], seed)

    with atomic_dir(out_dir) as tmp:
        words = _read_vocabulary(vocabulary_txt) + [HH_WORDS]
        words += [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in rows]
        # No chat template: RewardModel then writes the HH-RLHF format, like the GPT-2 HH RM.
        tokenizer = build_word_tokenizer(words, tmp, chat_template=None,
                                         model_max_length=settings["max_length"])
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=settings["hidden_size"],
            n_layer=settings["num_layers"], n_head=settings["num_heads"],
            n_positions=settings["max_length"], num_labels=1,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)
        model = GPT2ForSequenceClassification(config)
        # Encoded by the judge's own function, padded/truncated on the same side as RewardModel.
        tokenizer.padding_side, tokenizer.truncation_side = "right", "right"

        def reward_of(prompts: list[str], responses: list[str]) -> torch.Tensor:
            inputs = encode_reward_inputs(tokenizer, prompts, responses, "auto",
                                          settings["max_length"])
            return model(**inputs).logits[:, 0]

        def loss_of_batch(batch: list[int]) -> torch.Tensor:
            prompts = [train[i]["prompt"] for i in batch]
            chosen = reward_of(prompts, [train[i]["chosen"] for i in batch])
            rejected = reward_of(prompts, [train[i]["rejected"] for i in batch])
            return -torch.nn.functional.logsigmoid(chosen - rejected).mean()

        _train(model, len(train), loss_of_batch, settings, seed, logger, "toy reward model")
        model.save_pretrained(tmp, safe_serialization=True)

        judge = RewardModel(str(tmp), "cpu", batch_size=64, max_length=settings["max_length"])

        def accuracy(split: list[dict]) -> float:
            prompts = [r["prompt"] for r in split]
            chosen = judge.score(prompts, [r["chosen"] for r in split])
            rejected = judge.score(prompts, [r["rejected"] for r in split])
            return sum(c > r for c, r in zip(chosen, rejected)) / len(split)

        train_acc, held_acc = accuracy(train), accuracy(held)
        # Per pair type (the `pair` key of icet.toy.datasets' reward rows, e.g. "harmful:
        # refusal>off_topic"): an RM can be right on average and wrong on the pair L-PPO needs.
        by_pair = {}
        for pair in sorted({str(r["pair"]) for r in held if "pair" in r}):
            mine = [r for r in held if r.get("pair") == pair]
            by_pair[pair] = {"accuracy": round(accuracy(mine), 6), "n": len(mine)}
        card = _judge_card(
            "toy HH-RLHF-style reward model (GPT2ForSequenceClassification, 1 label, "
            "Bradley-Terry); accuracy = share of pairs with r(chosen) > r(rejected)",
            "reward", settings, seed, len(train), len(held), train_acc, held_acc,
            input_format="hh", held_out_accuracy_by_pair=by_pair)
        write_json(Path(tmp) / "judge.json", card)
    logger.info("toy reward model: held-out pair accuracy %.3f (train %.3f), %.1f s -> %s",
                held_acc, train_acc, time.perf_counter() - started, out_dir)
    return card


# ------------------------------------------------------------------------------- toxicity


def train_toy_toxicity(train_jsonl: str, vocabulary_txt: str, out_dir: str, params: dict,
                       seed: int, log=None) -> dict:
    """Train a toy Detoxify `original` on {text, toxicity}; write checkpoint.ckpt + config/."""
    from transformers import BertConfig, BertForSequenceClassification

    from icet.judges.toxicity import ToxicityJudge
    from icet.word_tokenizers import build_bert_tokenizer

    logger = setup_logging(log, "toy.toxicity")
    settings = toy_settings.fill("judges.toxicity", params, "toy toxicity params")
    rows = _read_rows(train_jsonl, ("text", "toxicity"))
    for number, row in enumerate(rows, start=1):
        if row["toxicity"] not in (0, 1):
            raise IcetError(f"{train_jsonl}: row {number}: toxicity {row['toxicity']!r} not 0/1")
    seed_everything(seed)
    started = time.perf_counter()
    train, held = _split(rows, settings["held_out_fraction"], seed)

    with atomic_dir(out_dir) as tmp:
        config_dir = Path(tmp) / "config"
        texts = _read_vocabulary(vocabulary_txt) + [r["text"] for r in rows]
        tokenizer = build_bert_tokenizer(texts, config_dir, settings["max_length"])
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=settings["hidden_size"],
            num_hidden_layers=settings["num_layers"], num_attention_heads=settings["num_heads"],
            intermediate_size=2 * settings["hidden_size"],
            max_position_embeddings=settings["max_length"], num_labels=len(DETOXIFY_CLASSES),
            pad_token_id=tokenizer.pad_token_id, initializer_range=settings["init_std"])
        model = BertForSequenceClassification(config)
        targets = torch.zeros(len(train), len(DETOXIFY_CLASSES))
        targets[:, DETOXIFY_CLASSES.index("toxic")] = torch.tensor([float(r["toxicity"]) for r in train])

        def loss_of_batch(batch: list[int]) -> torch.Tensor:
            inputs = tokenizer([train[i]["text"] for i in batch], return_tensors="pt",
                               padding=True, truncation=True)
            logits = model(**inputs).logits
            # Summed over the 6 heads (a mean would scale the one trained head's gradient by 1/6).
            return torch.nn.functional.binary_cross_entropy_with_logits(
                logits, targets[batch], reduction="sum") / len(batch)

        _train(model, len(train), loss_of_batch, settings, seed, logger, "toy toxicity")
        config.save_pretrained(config_dir)
        checkpoint = {
            "config": {
                "arch": {"args": {"model_type": "bert-base-uncased",
                                  "model_name": "BertForSequenceClassification",
                                  "tokenizer_name": "BertTokenizer",
                                  "num_classes": len(DETOXIFY_CLASSES)}},
                "dataset": {"args": {"classes": list(DETOXIFY_CLASSES)}},
            },
            "state_dict": {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
        }
        torch.save(checkpoint, Path(tmp) / "checkpoint.ckpt")

        judge = ToxicityJudge(str(Path(tmp) / "checkpoint.ckpt"), str(config_dir), "cpu", 64)

        def accuracy(split: list[dict]) -> float:
            scores = judge.score([r["text"] for r in split])
            return sum((s >= 0.5) == bool(r["toxicity"]) for s, r in zip(scores, split)) / len(split)

        train_acc, held_acc = accuracy(train), accuracy(held)
        card = _judge_card(
            "toy Detoxify 'original' (BertForSequenceClassification, 6 Jigsaw heads, only "
            "'toxic' trained); accuracy at toxicity >= 0.5", "toxicity", settings, seed,
            len(train), len(held), train_acc, held_acc,
            checkpoint="checkpoint.ckpt", config_dir="config")
        write_json(Path(tmp) / "judge.json", card)
    logger.info("toy toxicity: held-out accuracy %.3f (train %.3f), %.1f s -> %s",
                held_acc, train_acc, time.perf_counter() - started, out_dir)
    return card
