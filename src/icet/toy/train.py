"""Train the toy organism in LLaVA's order: encoder, LM, visual instructions, safety.

Each stage is one function (one Snakemake rule) that reads the previous stage's folder with
`from_pretrained` and writes its own with `save_pretrained`, so downstream code loads the toy
exactly like a downloaded checkpoint.

The paper's premise is built in: after stage 0 nothing ever sees any image-encoder layer but
the default one (`vision_feature_layer` from the config, the penultimate). Stages 2 and 3
pass it explicitly on every forward, and there is no per-layer objective or early stopping.

Each stage's hyperparameters, their defaults and the reasons for them: src/icet/schemas/toy.schema.yaml
(`stages.<stage>`); a stage fills what its params leave out from there (icet.toy.settings).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from icet.errors import IcetError
from icet.io import atomic_dir, read_jsonl, write_json
from icet.logs import progress, setup_logging
from icet.seeding import generator, seed_everything
from icet.toy import organism, settings

IGNORE_INDEX = -100  # label value the causal-LM loss skips


# ---------------------------------------------------------------------------- data


def _read_rows(path, required: list[str]) -> list[dict]:
    rows = read_jsonl(path, required=required)
    if not rows:
        raise IcetError(f"{path}: no rows")
    return rows


def load_pixel_values(rows: list[dict], jsonl_path, image_processor) -> tuple[torch.Tensor, list[int]]:
    """Preprocess each distinct image once; return the stack and each row's index into it."""
    from PIL import Image

    folder = Path(jsonl_path).parent
    index_of: dict[str, int] = {}
    images = []
    row_index = []
    for number, row in enumerate(rows, start=1):
        rel = row["image"]
        if rel not in index_of:
            path = folder / rel
            try:
                with Image.open(path) as img:
                    images.append(img.convert("RGB"))
            except (OSError, ValueError) as err:
                raise IcetError(f"{jsonl_path}: row {number}: image {rel}: {err}") from None
            index_of[rel] = len(index_of)
        row_index.append(index_of[rel])
    chunks = [image_processor(images=images[i:i + 256], return_tensors="pt")["pixel_values"]
              for i in range(0, len(images), 256)]
    return torch.cat(chunks), row_index


def encode_dialogue(tokenizer, prompt: str, response: str, n_image_tokens: int,
                    loss_on: str = "response") -> tuple[list[int], list[int]]:
    """Token ids of one chat-formatted exchange and its labels (prompt masked if asked).

    `n_image_tokens` > 0 puts an image before the prompt and expands its <image> the way
    LlavaProcessor does (one placeholder per patch); 0 makes a text-only exchange.
    """
    if n_image_tokens:
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
    else:
        user = {"role": "user", "content": prompt}
    prefix = tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [user, {"role": "assistant", "content": response}], tokenize=False)
    if n_image_tokens:
        image = tokenizer.image_token
        prefix = prefix.replace(image, image * n_image_tokens)
        full = full.replace(image, image * n_image_tokens)
    prefix_ids = tokenizer(prefix)["input_ids"]
    ids = tokenizer(full.rstrip())["input_ids"]
    if ids[:len(prefix_ids)] != prefix_ids:
        raise IcetError(f"chat template: prompt tokens are not a prefix of the dialogue: {prompt!r}")
    if loss_on == "response":
        labels = [IGNORE_INDEX] * len(prefix_ids) + ids[len(prefix_ids):]
    elif loss_on == "all":
        labels = list(ids)
    else:
        raise IcetError(f"loss_on: expected 'response' or 'all', got {loss_on!r}")
    return ids, labels


def collate(sequences: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a batch (as inference does) with positions counted from the first real token.

    Explicit position ids make the loss independent of padding, and match what `generate`
    derives from the attention mask.
    """
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(sequences):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        labels[i, width - len(labs):] = torch.tensor(labs)
        attention_mask[i, width - len(ids):] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
            "position_ids": position_ids}


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """Row indices for each step: seeded shuffles, epoch after epoch."""
    rng = generator(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(steps * batch_size / n) + 1)])
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


# ---------------------------------------------------------------------------- training


def train_loop(loss_fn: Callable[[int, np.ndarray], torch.Tensor], parameters: list, params: dict,
               n_rows: int, seed: int, logger, desc: str,
               on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """AdamW over `parameters` for params["steps"] steps; return the loss record.

    `parameters`: tensors, or AdamW parameter groups (dicts with "params" and, where a group
    learns at its own rate, "lr"); the schedule scales every group's rate alike."""
    optimizer = torch.optim.AdamW(parameters, lr=params["lr"], weight_decay=params["weight_decay"])
    every = [p for group in optimizer.param_groups for p in group["params"]]
    steps, warmup = params["steps"], params["warmup_steps"]

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    losses: list[float] = []
    start = time.perf_counter()
    for step, idx in enumerate(progress(batch_indices(n_rows, params["batch_size"], steps, seed),
                                        desc=desc, total=steps)):
        if on_step is not None:
            on_step(step)
        loss = loss_fn(step, idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in every if p.grad is not None],
                                       params["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if (step + 1) % params["log_every"] == 0 or step + 1 == steps:
            logger.info("%s step %d/%d loss %.4f", desc, step + 1, steps, losses[-1])
    tail = losses[-min(10, len(losses)):]
    head = losses[:min(10, len(losses))]
    # Wall time goes to the log only: the model folder's metrics.json must be the same bytes
    # for the same weights, or a retrained identical stage would read as another model (an
    # L-PPO resume refuses a changed model folder; the sweep recomputes every shard).
    logger.info("%s: %d steps in %.1f s", desc, steps, time.perf_counter() - start)
    return {
        "steps": steps,
        "first_loss": float(np.mean(head)),  # mean of the first 10 steps
        "final_loss": float(np.mean(tail)),  # mean of the last 10 steps: less noisy than one
        "loss_curve": [round(x, 5) for x in losses],
    }


def load_stage_input(model_dir, tokenizer_dir, arch: dict):
    """The previous stage's VLM, its processor and the toy tokenizer, checked to agree."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(str(model_dir), use_safetensors=True)
    processor = AutoProcessor.from_pretrained(str(model_dir))
    organism.check_arch(model.config, arch, str(model_dir))
    tokenizer = organism.load_tokenizer(tokenizer_dir)
    if tokenizer.get_vocab() != processor.tokenizer.get_vocab():
        raise IcetError(f"{tokenizer_dir}: tokenizer differs from the one saved in {model_dir}")
    return model, processor, tokenizer


def _start(log, seed: int, name: str):
    # Threads are set by the caller (icet.runtime.configure), once per job.
    logger = setup_logging(log, name)
    seed_everything(seed)
    return logger


def _count(parameters) -> int:
    return int(sum(p.numel() for p in parameters))


# ---------------------------------------------------------------------------- stage 0


def train_vision_encoder(train_vision_jsonl, tokenizer_dir, out_dir, params: dict | None = None,
                         seed: int = 0, log=None) -> dict[str, Any]:
    """Stage 0: a CLIP ViT trained from scratch to name each image's attributes.

    Linear heads on the pooled output classify shape, colour (and background, position
    where the rows have them), so the encoder's layers carry meaning the LM can later read.
    Saves the CLIPVisionModel, its image processor and `metrics.json` (held-out accuracy).
    """
    from transformers import CLIPVisionModel

    params = settings.fill("stages.vision", params, "train_vision_encoder params")
    logger = _start(log, seed, "toy.train.vision")
    arch = organism.resolve_arch(params["arch"])
    rows = _read_rows(train_vision_jsonl, ["image"])
    keys = [k for k in params["label_keys"] if all(k in row for row in rows)]
    if not keys:
        raise IcetError(f"{train_vision_jsonl}: no rows carry any of {params['label_keys']}")
    classes = {k: sorted({str(row[k]) for row in rows}) for k in keys}
    targets = torch.tensor([[classes[k].index(str(row[k])) for k in keys] for row in rows])

    image_processor = organism.build_image_processor(arch)
    pixels, row_image = load_pixel_values(rows, train_vision_jsonl, image_processor)
    row_image = torch.tensor(row_image)

    order = generator(seed).permutation(len(rows))
    n_heldout = min(len(rows) - 1, max(1, round(params["holdout_fraction"] * len(rows))))
    heldout, train = order[:n_heldout], order[n_heldout:]
    logger.info("vision: %d train rows, %d held out; heads %s", len(train), n_heldout,
                {k: len(v) for k, v in classes.items()})

    model = CLIPVisionModel(organism.vision_config(arch))
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(arch["vision_hidden"], len(classes[k]))
                                 for k in keys})
    patch_heads = torch.nn.ModuleDict({k: torch.nn.Linear(arch["vision_hidden"], len(classes[k]))
                                       for k in keys} if params["patch_heads"] else {})
    model.train()

    def logits_of(idx) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        out = model(pixel_values=pixels[row_image[idx]])
        pooled = {k: heads[k](out.pooler_output) for k in keys}
        if not params["patch_heads"]:
            return pooled, {}
        patches = model.post_layernorm(out.last_hidden_state[:, 1:]).mean(1)
        return pooled, {k: patch_heads[k](patches) for k in keys}

    def loss_fn(step, batch):
        idx = torch.as_tensor(train[batch])
        pooled, patches = logits_of(idx)
        return sum(torch.nn.functional.cross_entropy(logits[k], targets[idx, j])
                   for logits in (pooled, patches) if logits for j, k in enumerate(keys))

    parameters = [*model.parameters(), *heads.parameters(), *patch_heads.parameters()]
    metrics = train_loop(loss_fn, parameters, params, len(train), seed, logger, "vision encoder")

    model.eval()
    with torch.no_grad():
        idx = torch.as_tensor(heldout)
        pooled, patches = logits_of(idx)

        def accuracy_of(logits):
            return {k: float((logits[k].argmax(-1) == targets[idx, j]).float().mean())
                    for j, k in enumerate(keys)}

        accuracy = accuracy_of(pooled)
    metrics.update({
        "accuracy": accuracy,  # of the heads on the pooled (CLS) output
        "patch_accuracy": accuracy_of(patches) if patches else None,  # on the mean patch token
        "chance": {k: 1.0 / len(classes[k]) for k in keys},
        "classes": classes,
        "n_train": len(train),
        "n_heldout": n_heldout,
        "n_parameters": _count(model.parameters()),
        "params": params,
        "seed": seed,
    })
    logger.info("vision: held-out accuracy %s", accuracy)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        write_json(Path(tmp) / "metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------------------- stage 1


def pretrain_language_model(train_text_jsonl, tokenizer_dir, out_dir, params: dict | None = None,
                            seed: int = 0, log=None, init_dir=None) -> dict[str, Any]:
    """Stage 1: a Llama LM on text-only chat dialogues; it answers harmful requests too.

    It stands in for the unaligned base chat model; safety comes only in stage 3.
    Saves the LlamaForCausalLM, the tokenizer and `metrics.json`.

    `init_dir` (an earlier LM's folder) fine-tunes that LM instead of a fresh one, with the
    `stages.text_safety` settings: text-only safety tuning of the base LM before any image is
    seen, as Vicuna's chat tuning precedes LLaVA (the organism study's `text_safety` stage).
    """
    from transformers import LlamaForCausalLM

    section = "stages.lm" if init_dir is None else "stages.text_safety"
    params = settings.fill(section, params, "pretrain_language_model params")
    logger = _start(log, seed, "toy.train.lm")
    tokenizer = organism.load_tokenizer(tokenizer_dir)
    rows = _read_rows(train_text_jsonl, ["prompt", "response"])
    encoded = [encode_dialogue(tokenizer, r["prompt"], r["response"], 0, params["loss_on"])
               for r in rows]
    logger.info("lm: %d dialogues, longest %d tokens, from %s", len(rows),
                max(len(e[0]) for e in encoded), init_dir or "scratch")

    if init_dir is None:
        model = LlamaForCausalLM(organism.text_config(params["arch"], tokenizer))
    else:
        model = LlamaForCausalLM.from_pretrained(str(init_dir), use_safetensors=True)
        if model.config.vocab_size != len(tokenizer):
            raise IcetError(f"{init_dir}: vocab size {model.config.vocab_size} != tokenizer's "
                            f"{len(tokenizer)}")
    model.train()

    def loss_fn(step, batch):
        return model(**collate([encoded[i] for i in batch], tokenizer.pad_token_id)).loss

    parameters = list(model.parameters())
    metrics = train_loop(loss_fn, parameters, params, len(rows), seed, logger, "language model")
    metrics.update({"n_rows": len(rows), "n_parameters": _count(parameters),
                    "params": params, "seed": seed})
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(Path(tmp) / "metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------------------- stages 2-3


def _multimodal_data(rows, jsonl_path, processor, n_image_tokens):
    tokenizer = processor.tokenizer
    pixels, row_image = load_pixel_values(rows, jsonl_path, processor.image_processor)
    encoded = [encode_dialogue(tokenizer, r["prompt"], r["response"], n_image_tokens)
               for r in rows]
    return pixels, torch.tensor(row_image), encoded


def _multimodal_loss(model, processor, pixels, row_image, encoded):
    """Response-token loss of a batch, with image features from the DEFAULT layer only."""
    layer = model.config.vision_feature_layer  # the one layer the toy is ever trained with
    pad_id = processor.tokenizer.pad_token_id

    def loss_fn(step, batch):
        inputs = collate([encoded[i] for i in batch], pad_id)
        idx = torch.as_tensor(batch)
        return model(**inputs, pixel_values=pixels[row_image[idx]],
                     vision_feature_layer=layer,
                     vision_feature_select_strategy="default").loss

    return loss_fn


def _freeze(module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


def visual_instruction_tuning(vision_dir, lm_dir, tokenizer_dir, train_instruct_jsonl, out_dir,
                              params: dict | None = None, seed: int = 0, log=None) -> dict[str, Any]:
    """Stage 2: join encoder and LM with a fresh projector; tune on benign visual instructions.

    As LLaVA: the vision tower stays frozen; the projector trains alone first, then with the
    whole LM. Saves the LlavaForConditionalGeneration, its processor and `metrics.json`.
    """
    from transformers import CLIPVisionModel, LlamaForCausalLM, LlavaForConditionalGeneration

    params = settings.fill("stages.instruct", params, "visual_instruction_tuning params")
    logger = _start(log, seed, "toy.train.instruct")
    tokenizer = organism.load_tokenizer(tokenizer_dir)
    vision = CLIPVisionModel.from_pretrained(str(vision_dir), use_safetensors=True)
    lm = LlamaForCausalLM.from_pretrained(str(lm_dir), use_safetensors=True)
    if lm.config.vocab_size != len(tokenizer):
        raise IcetError(f"{lm_dir}: vocab size {lm.config.vocab_size} != tokenizer's {len(tokenizer)}")
    config = organism.llava_config_from_parts(vision.config, lm.config, tokenizer, params["arch"])
    organism.check_arch(config, params["arch"], f"{vision_dir} + {lm_dir}")
    model = LlavaForConditionalGeneration(config)  # projector initialised under the seed
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    del vision, lm

    arch = {"image_size": config.vision_config.image_size,
            "patch_size": config.vision_config.patch_size}
    processor = organism.build_processor(tokenizer_dir, arch)
    rows = _read_rows(train_instruct_jsonl, ["image", "prompt", "response"])
    pixels, row_image, encoded = _multimodal_data(rows, train_instruct_jsonl, processor,
                                                  config.image_seq_length)
    logger.info("instruct: %d rows, %d images, feature layer %d (ICET l=%d)", len(rows),
                len(pixels), config.vision_feature_layer, organism.default_layer(config))

    model.train()
    _freeze(model.model.vision_tower)
    projector = list(model.model.multi_modal_projector.parameters())
    lm_params = [*model.model.language_model.parameters(), *model.lm_head.parameters()]
    warmup = params["projector_warmup_steps"] if params["train_lm"] else params["steps"]
    # LLaVA's stage 2 tunes the LM at a rate far below the projector's stage-1 rate (2e-5 vs
    # 1e-3); `lm_lr` gives the LM its own rate, null keeps one rate for both.
    groups = (projector + lm_params if params["lm_lr"] is None else
              [{"params": projector}, {"params": lm_params, "lr": params["lm_lr"]}])

    def on_step(step: int) -> None:
        # Params without gradients are skipped by AdamW, so the LM waits untouched.
        if step in (0, warmup):
            for p in lm_params:
                p.requires_grad_(step >= warmup)

    loss_fn = _multimodal_loss(model, processor, pixels, row_image, encoded)
    metrics = train_loop(loss_fn, groups, params, len(rows), seed, logger,
                         "visual instruction tuning", on_step)
    for p in lm_params:
        p.requires_grad_(True)
    metrics.update({"n_rows": len(rows), "n_images": len(pixels),
                    "vision_feature_layer": config.vision_feature_layer,
                    "icet_default_layer": organism.default_layer(config),
                    "n_parameters": _count(model.parameters()), "params": params, "seed": seed})
    _save_llava(model, processor, metrics, out_dir)
    return metrics


def _save_llava(model, processor, metrics, out_dir) -> None:
    model.eval()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json(Path(tmp) / "metrics.json", metrics)


def select_safety_trainable(model, trainable: str, params: dict):
    """Return (model to train, its trainable parameters) for `trainable`; the rest frozen."""
    language_model = model.model.language_model
    for p in [*language_model.parameters(), *model.lm_head.parameters()]:
        p.requires_grad_(False)
    if trainable == "lm":
        chosen = [*language_model.parameters(), *model.lm_head.parameters()]
    elif trainable.startswith("last_layers:"):
        try:
            k = int(trainable.split(":", 1)[1])
        except ValueError:
            k = 0
        layers = language_model.layers
        if not 1 <= k <= len(layers):
            raise IcetError(f"trainable: {trainable!r}; k must be in 1..{len(layers)}")
        chosen = [p for layer in layers[-k:] for p in layer.parameters()]
    elif trainable == "lora":
        from peft import LoraConfig, get_peft_model

        targets = "|".join(params["lora_target_modules"])
        lora = LoraConfig(r=params["lora_r"], lora_alpha=params["lora_alpha"],
                          lora_dropout=params["lora_dropout"], bias="none",
                          target_modules=rf".*language_model.*\.({targets})")  # not the vision tower
        model = get_peft_model(model, lora)
        return model, [p for p in model.parameters() if p.requires_grad]
    else:
        raise IcetError(f"trainable: {trainable!r}; expected 'lm', 'last_layers:k' or 'lora'")
    for p in chosen:
        p.requires_grad_(True)
    return model, chosen


def safety_tuning(model_dir, tokenizer_dir, train_safety_jsonl, out_dir, params: dict | None = None,
                  seed: int = 0, log=None) -> dict[str, Any]:
    """Stage 3: supervised safety tuning at the default layer (harmful -> refuse, benign -> answer).

    Vision tower and projector stay frozen; `trainable` picks what in the LM learns. A LoRA
    is merged before saving, so the output loads as a plain LlavaForConditionalGeneration.
    """
    params = settings.fill("stages.safety", params, "safety_tuning params")
    logger = _start(log, seed, "toy.train.safety")
    model, processor, tokenizer = load_stage_input(model_dir, tokenizer_dir, params["arch"])
    rows = _read_rows(train_safety_jsonl, ["image", "prompt", "response", "kind"])
    pixels, row_image, encoded = _multimodal_data(rows, train_safety_jsonl, processor,
                                                  model.config.image_seq_length)
    kinds = {k: sum(r["kind"] == k for r in rows) for k in sorted({r["kind"] for r in rows})}
    logger.info("safety: %d rows %s, trainable %s, feature layer %d", len(rows), kinds,
                params["trainable"], model.config.vision_feature_layer)

    model.train()
    _freeze(model.model.vision_tower)
    _freeze(model.model.multi_modal_projector)
    model, trainable = select_safety_trainable(model, params["trainable"], params)
    base = model.get_base_model() if params["trainable"] == "lora" else model
    loss_fn = _multimodal_loss(base, processor, pixels, row_image, encoded)
    # The peft wrapper only adds adapters; the base forward is the same module graph.
    metrics = train_loop(loss_fn, trainable, params, len(rows), seed, logger, "safety tuning")
    if params["trainable"] == "lora":
        model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    metrics.update({"n_rows": len(rows), "rows_by_kind": kinds,
                    "n_trainable": _count(trainable),
                    "vision_feature_layer": model.config.vision_feature_layer,
                    "icet_default_layer": organism.default_layer(model.config),
                    "params": params, "seed": seed})
    _save_llava(model, processor, metrics, out_dir)
    return metrics
