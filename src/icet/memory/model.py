"""Peak GPU memory of each job, from the architecture (icet.memory.arch) and the run's settings.

An estimate is the memory resident through the whole job (weights; for L-PPO also the
reward model, the LoRA weights, gradients and optimiser state) plus the largest of its
phases, each a sum of named tensors that the code path holds at that phase's worst moment
(read off the code, then checked against measured peaks: tests/memory, docs/performance.md).
All counts are bytes allocated, what CUDA's max_memory_allocated reports; the caching
allocator's fragmentation and the CUDA context come on top (icet.engine.MEMORY_SHARE and
`headroom` leave room for them).

b = bytes per element of the compute dtype (2: bf16 on a GPU). For a sweep batch of R rows
(prompts x layers of a group), P prompt positions (the longest row's), N new tokens:

- vision: the encoder holds every layer's hidden state of the images it runs (CLIP:
  (L+1) x 577 x 1024 an image; Mllama: (32+1) x 4 tiles x 1608 x 1280, plus a 6432^2
  attention mask), its MLP's transient, and the projected features of the batch so far;
- assemble: the text embeddings, every layer's LM inputs and their stacked copy;
- prefill: the stacked inputs, three hidden-size and three MLP-size activations of the
  layer running, the KV cache of P positions, rotary tables and the boolean causal mask;
  Mllama adds its vision states (6404 x 4096 a row), their cross-attention KV in 8 layers
  and the cross-attention mask expanded to every vision token (transformers'
  _prepare_cross_attention_mask, built in the model dtype);
- decode: the KV cache preallocated for P + N positions, and one layer's copy of the
  prefill cache while it moves into its buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from icet.errors import IcetError
from icet.memory.arch import Arch

GB = 10 ** 9


@dataclass
class Phase:
    name: str
    terms: dict[str, int]

    @property
    def bytes(self) -> int:
        return int(sum(self.terms.values()))


@dataclass
class Estimate:
    """Peak memory of one job: what it holds throughout plus its largest phase."""

    what: str
    resident: dict[str, int]
    phases: list[Phase] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def peak_phase(self) -> Phase:
        return max(self.phases, key=lambda p: p.bytes) if self.phases else Phase("none", {})

    @property
    def peak(self) -> int:
        return int(sum(self.resident.values())) + self.peak_phase.bytes

    def describe(self) -> str:
        """One line: the peak, resident memory, and the largest phase with its largest terms."""
        phase = self.peak_phase

        def listed(terms: dict[str, int]) -> str:
            top = sorted(terms.items(), key=lambda kv: -kv[1])[:3]
            return ", ".join(f"{name} {value / GB:.1f}" for name, value in top)

        return (f"{self.what}: {self.peak / GB:.1f} GB at its peak = "
                f"{sum(self.resident.values()) / GB:.1f} GB held ({listed(self.resident)}) + "
                f"{phase.bytes / GB:.1f} GB in its {phase.name} ({listed(phase.terms)})")


# ---- the language model ---------------------------------------------------------------------

def lm_prefill_terms(arch: Arch, rows: int, positions: int, b: int) -> dict[str, int]:
    """A no-grad forward of `rows` x `positions` through the decoder, at the last layer's MLP."""
    t = arch.text
    tokens = rows * positions
    return {"inputs": tokens * t.hidden * b,
            "hidden states": 3 * tokens * t.hidden * b,
            "mlp": 3 * tokens * t.intermediate * b,
            "kv cache": rows * t.kv_elements(positions) * b,
            "rotary": 2 * tokens * t.head_dim * b,
            "causal mask": rows * positions * positions,
            "logits": rows * t.vocab * b}


def cross_terms(arch: Arch, rows: int, positions: int, b: int, prefill: bool) -> dict[str, int]:
    """Mllama: the cross-attention KV of every row (8 layers x 6404 vision tokens), and at
    the prefill the vision states it is computed from and the cross-attention mask expanded
    to every vision token."""
    if not arch.cross_positions:
        return {}
    t, c = arch.text, arch.cross_positions
    terms = {"cross kv": 2 * rows * len(t.cross_layers) * t.kv_heads * t.head_dim * c * b}
    if prefill:
        terms["vision states"] = rows * c * t.hidden * b
        terms["cross mask"] = rows * positions * c * b
    return terms


def cross_mask_build_terms(arch: Arch, rows: int, positions: int, b: int) -> dict[str, int]:
    """Mllama, before the prefill's first layer: transformers' _prepare_cross_attention_mask
    holds the repeated mask, 1 - it, its boolean and the result at once, beside the inputs."""
    t, c = arch.text, arch.cross_positions
    return {"inputs": rows * positions * t.hidden * b, "vision states": rows * c * t.hidden * b,
            "cross mask": rows * positions * c * (3 * b + 1)}


# ---- the vision encoders ------------------------------------------------------------------

def image_tiles(arch: Arch) -> int:
    """Encoder inputs per image: LLaVA 1, LLaVA-NeXT its largest grid plus the base image
    (5 for 336 px tiles on the 2x2 / 1x3 pinpoints), Mllama its tiles."""
    v = arch.vision
    if arch.model_type == "llava_next":
        side = v.image_size // v.patch
        return 1 + (arch.image_positions - side * side) // (side * side)
    return v.tiles


def pixel_bytes(arch: Arch, images: int, b: int) -> int:
    v = arch.vision
    return images * image_tiles(arch) * 3 * v.image_size ** 2 * b


def image_feature_bytes(arch: Arch, b: int) -> int:
    """One image's projected features, what a layer's LM input holds of it."""
    t = arch.text
    return (arch.cross_positions or arch.image_positions) * t.hidden * b


def vision_terms(arch: Arch, images: int, layers: int, b: int) -> dict[str, int]:
    """The encoder on `images` images, at its worst moment (the per-layer projection)."""
    v, t = arch.vision, arch.text
    inputs = images * image_tiles(arch)  # tiles (or images) the encoder runs on
    if v.kind == "clip":
        states = (v.layers + 1) * inputs * v.positions * v.hidden * b
        encoder = 3 * inputs * v.positions * v.intermediate * b  # fc1 out, quick_gelu's two
        project = 2 * inputs * v.positions * t.hidden * b
        return {"hidden states": states, "encoder layer": max(encoder, project)}
    tokens = inputs * v.padded  # every tile's patches, padded to a multiple of 8
    taps = v.output_dim // v.hidden - 1
    output = inputs * v.positions * v.output_dim * b  # the model's output (layer N's features)
    local = 2 * tokens * v.intermediate * b  # fc1 out and its gelu
    # ICET-l: layernorm_post and tile embedding of the exit state, then the global encoder
    # (its MLP and residuals), beside the model's output
    global_pass = output + tokens * (2 * v.intermediate + 4 * v.hidden) * b
    project = (output + taps * tokens * v.hidden * b + output  # output, taps, this layer's features
               + inputs * v.positions * t.hidden * b)  # projected
    return {"hidden states": (v.layers + 1) * tokens * v.hidden * b,
            "attention mask": images * (v.tiles * v.padded) ** 2 * b,
            "encoder layer": max(local, global_pass, project)}


# ---- the sweep ----------------------------------------------------------------------------

def sweep_phases(arch: Arch, *, rows: int, vision_batch: int, prompt_positions: int,
                 max_new_tokens: int, layers: int, b: int) -> list[Phase]:
    """The fast engine's phases for one batch of `rows` rows: `rows // layers` prompts of
    `prompt_positions` positions, each at `layers` ICET layers."""
    t = arch.text
    prompts = max(1, rows // max(1, layers))
    rows = prompts * max(1, layers)
    p, n = prompt_positions, max_new_tokens
    images = min(vision_batch, prompts)
    held = layers * prompts * image_feature_bytes(arch, b)  # every layer's features, all images
    vision = {"pixels": pixel_bytes(arch, prompts, b), "features so far": held,
              **vision_terms(arch, images, layers, b)}
    if arch.cross_positions:  # Mllama: every layer's vision states, then their stacked copy
        assemble = {"text embeddings": 2 * rows * p * t.hidden * b,
                    "vision states": 2 * rows * arch.cross_positions * t.hidden * b}
    else:  # LLaVA: each layer's features scattered into the text embeddings, then stacked
        scatter = (prompts * p * t.hidden * b + rows * p * t.hidden * b
                   + (layers + 1) * prompts * image_feature_bytes(arch, b))
        assemble = {"layer inputs": max(scatter, 2 * rows * p * t.hidden * b)}
    prefill = {**lm_prefill_terms(arch, rows, p, b), **cross_terms(arch, rows, p, b, True)}
    decode = {"kv cache": rows * t.kv_elements(p + n) * b,
              "kv moving": rows * t.kv_elements(p) * b // max(1, t.self_layers),
              "logits": rows * t.vocab * b, **cross_terms(arch, rows, p, b, False)}
    phases = [Phase("vision pass", vision), Phase("input assembly", assemble),
              Phase("prefill", prefill), Phase("decode", decode)]
    if arch.cross_positions:
        phases.insert(2, Phase("cross mask", cross_mask_build_terms(arch, rows, p, b)))
    return phases


def weight_bytes(arch: Arch, b: int) -> int:
    return arch.n_params * b


def sweep_estimate(arch: Arch, *, rows: int, vision_batch: int, prompt_positions: int,
                   max_new_tokens: int, layers: int, b: int = 2, what: str = "sweep") -> Estimate:
    return Estimate(what, {"weights": weight_bytes(arch, b)},
                    sweep_phases(arch, rows=rows, vision_batch=vision_batch,
                                 prompt_positions=prompt_positions, max_new_tokens=max_new_tokens,
                                 layers=layers, b=b),
                    {"rows": rows, "vision_batch": vision_batch, "prompt_positions": prompt_positions})


@dataclass(frozen=True)
class Plan:
    rows: int
    vision_batch: int
    group: int  # layers decoded together
    activations: int  # predicted bytes beyond the weights at the plan's peak


def _group(rows: int, n_prompts: int, layers: int) -> int:
    """icet.engine.plan_groups' group size for `rows` rows."""
    return max(1, min(layers, rows // max(1, n_prompts)))


def sweep_plan(arch: Arch, *, budget: int, prompt_positions: int, max_new_tokens: int,
               n_prompts: int, layers: int, dtype_bytes: int, rows: int | None = None,
               max_rows: int = 1024, where: str = "sweep") -> Plan:
    """Rows per batch (given, or the most that fit `budget` bytes beyond the weights) and the
    largest vision sub-batch that fits with them; IcetError naming the figures when even one
    row and one image do not fit."""
    b = dtype_bytes

    def need(r: int, v: int) -> int:
        group = _group(r, n_prompts, layers)
        return max(p.bytes for p in sweep_phases(arch, rows=r, vision_batch=v,
                                                 prompt_positions=prompt_positions,
                                                 max_new_tokens=max_new_tokens, layers=group, b=b))

    if rows is None:
        if need(1, 1) > budget:
            raise IcetError(f"{where}: one row of {prompt_positions} + {max_new_tokens} positions "
                            f"needs {need(1, 1) / GB:.1f} GB beyond the weights, "
                            f"{budget / GB:.1f} GB is planned free")
        low, high = 1, max(1, max_rows)
        while low < high:  # the peak grows with the rows: the largest that fits
            mid = (low + high + 1) // 2
            if need(mid, 1) <= budget:
                low = mid
            else:
                high = mid - 1
        rows = low
    images = max(1, rows // _group(rows, n_prompts, layers))
    low, high = 1, images
    while low < high:
        mid = (low + high + 1) // 2
        if need(rows, mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return Plan(rows=rows, vision_batch=low, group=_group(rows, n_prompts, layers),
                activations=need(rows, low))


# ---- L-PPO --------------------------------------------------------------------------------

# The PPO update's activations, per token of a micro-batch, in elements of the compute dtype
# (b bytes): `saved_h` x hidden + `saved_i` x MLP width per LM layer (what autograd keeps for
# the backward: with LoRA on a frozen base, the layer input, norms, q/k/v, attention output
# and the MLP's gate/up/SiLU; under bf16 autocast also the fp32 RMSNorm inputs and each LoRA
# input's bf16 copy; with gradient checkpointing only the layer input); then the larger of
# two moments: the loss's fp32 logits copies (`logits` x micro-batch x response x vocab x 4
# bytes: float, temperature, mask, log-softmax, entropy and their gradients) or one layer's
# recomputation and backward (`back_h` x hidden + `back_i` x MLP width per token). Read off
# CPU runs of this code path (LLaVA shapes scaled down, LoRA r 16 on q/k/v/o) by varying one
# dimension at a time; "bf16" ran under CPU autocast as the GPU's mixed precision runs, and is
# the figure a GPU device check confirms (docs/performance.md). tests/memory checks all four
# at a shape not used to read them.
UPDATE_BYTES = {
    ("fp32", False): {"saved_h": 6.42, "saved_i": 3.36, "logits": 7.31, "back_h": 7.29, "back_i": 1.04},
    ("fp32", True): {"saved_h": 1.005, "saved_i": 0.0, "logits": 7.99, "back_h": 9.98, "back_i": 6.61},
    ("bf16", False): {"saved_h": 13.65, "saved_i": 3.0, "logits": 7.87, "back_h": 34.38, "back_i": 0.56},
    ("bf16", True): {"saved_h": 1.01, "saved_i": 0.0, "logits": 8.83, "back_h": 35.54, "back_i": 3.13},
}


def lora_params(arch: Arch, r: int, targets: Iterable[str]) -> int:
    """LoRA A and B of rank r on the LM's named projections (every decoder layer, the
    cross-attention layers' too: the regex matches inside the language model)."""
    t = arch.text
    q, kv = t.heads * t.head_dim, t.kv_heads * t.head_dim
    shapes = {"q_proj": (t.hidden, q), "k_proj": (t.hidden, kv), "v_proj": (t.hidden, kv),
              "o_proj": (q, t.hidden), "gate_proj": (t.hidden, t.intermediate),
              "up_proj": (t.hidden, t.intermediate), "down_proj": (t.intermediate, t.hidden)}
    per_layer = sum(r * (shapes[name][0] + shapes[name][1]) for name in targets if name in shapes)
    return t.layers * per_layer


def lppo_update_terms(arch: Arch, rows: int, prompt: int, response: int, precision: str,
                      checkpointing: bool, b: int) -> dict[str, int]:
    """The update phase of one micro-batch of `rows` samples (prompt + response positions)."""
    t, k = arch.text, UPDATE_BYTES[(precision, checkpointing)]
    tokens = rows * (prompt + response)
    saved = int(t.layers * tokens * (k["saved_h"] * t.hidden + k["saved_i"] * t.intermediate) * b)
    logits = int(k["logits"] * rows * response * t.vocab * 4)
    backward = int(tokens * (k["back_h"] * t.hidden + k["back_i"] * t.intermediate) * b)
    terms = {"saved activations": saved, "loss and backward": max(logits, backward)}
    if arch.cross_positions:  # Mllama: each cross-attention layer keeps its vision-state K/V input
        c = arch.cross_positions
        terms["cross-attention"] = rows * c * (t.hidden + len(t.cross_layers) * 2
                                               * t.kv_heads * t.head_dim) * b
    return terms


def lppo_estimate(arch: Arch, params: dict, *, prompt_positions: int, reward: Arch | None,
                  reward_batch: int, reward_length: int, on_gpu: bool = True,
                  checkpointing: bool | None = None, what: str = "lppo") -> Estimate:
    """One L-PPO step as train_lppo runs it with every sample of a minibatch batched across
    layers: rollout (generate over rollout_batch rows), scoring (minibatch // grad_accum rows
    at a time, policy with hidden states then reference, no grad), the reward model, and the
    update (the same micro-batches with gradients)."""
    t = arch.text
    full = bool(params.get("full_finetune", False))
    # bf16 autocast on a GPU whatever the weights' dtype (fp32 master weights in a full
    # fine-tune, bf16 frozen base with LoRA); fp32 throughout on a CPU
    precision = "bf16" if on_gpu else "fp32"
    b = 2 if on_gpu else 4
    weights_b = 4 if full or not on_gpu else 2
    gc = bool(params.get("gradient_checkpointing", False) if checkpointing is None else checkpointing)
    rollout_rows, n = int(params["rollout_batch"]), int(params["max_new_tokens"])
    micro = max(1, int(params["minibatch"]) // max(1, int(params.get("grad_accum", 1))))
    p = prompt_positions
    lm_params = arch.params.get("embedding", 0) + arch.params.get("decoder", 0) + arch.params.get("lm_head", 0)
    resident = {"policy weights": weight_bytes(arch, weights_b), "value head": (t.hidden + 1) * 16}
    if full:  # fp32 master weights, a frozen deep copy as the reference, grads and AdamW for the LM
        resident["reference copy"] = weight_bytes(arch, 4)
        resident["gradients and AdamW"] = 12 * lm_params
    else:
        lora = params.get("lora") or {}
        resident["LoRA, gradients and AdamW"] = 16 * lora_params(
            arch, int(lora.get("r", 16)), lora.get("target_modules", ("q_proj", "k_proj", "v_proj", "o_proj")))
    if reward is not None:
        resident["reward model"] = reward.n_params * 4  # judges load it in fp32 (icet.judges.base)
    rollout = {**lm_prefill_terms(arch, rollout_rows, p, b), **cross_terms(arch, rollout_rows, p, b, True)}
    decode = {"kv cache": rollout_rows * t.kv_elements(p + n) * b,
              "kv growing": 2 * rollout_rows * t.kv_elements(p + n) * b // max(1, t.self_layers),
              "logits": rollout_rows * t.vocab * 4, **cross_terms(arch, rollout_rows, p, b, False)}
    vision = {"pixels": pixel_bytes(arch, rollout_rows, b),
              **vision_terms(arch, rollout_rows, 1, b)}
    tokens = micro * (p + n)
    score = {"hidden states": (t.layers + 1) * tokens * t.hidden * b,
             "layer": tokens * (3 * t.hidden + 3 * t.intermediate) * b,
             "logits": 4 * micro * (n + 1) * t.vocab * 4,
             **cross_terms(arch, micro, p + n, b, True)}
    phases = [Phase("rollout vision pass", vision), Phase("rollout prefill", rollout),
              Phase("rollout decode", decode), Phase("scoring", score),
              Phase("update", lppo_update_terms(arch, micro, p, n, precision, gc, b))]
    if reward is not None:
        phases.append(Phase("reward model", judge_activation_terms(reward, reward_batch, reward_length, 4)))
    return Estimate(what, resident, phases, {"micro_batch": micro, "gradient_checkpointing": gc,
                                             "precision": precision})


# ---- judges -------------------------------------------------------------------------------

def decoder_generate_phases(arch: Arch, rows: int, positions: int, new_tokens: int, b: int) -> list[Phase]:
    """transformers' generate: the prefill (last position's logits only), then the decode with a
    DynamicCache, whose torch.cat holds one layer's cache twice."""
    t = arch.text
    prefill = lm_prefill_terms(arch, rows, positions, b)
    prefill["logits"] = rows * t.vocab * (b + 4)
    total = positions + new_tokens
    decode = {"kv cache": rows * t.kv_elements(total) * b,
              "kv growing": rows * t.kv_elements(total) * b // max(1, t.self_layers),
              "logits": rows * t.vocab * (b + 4)}
    return [Phase("prefill", prefill), Phase("decode", decode)]


def judge_activation_terms(arch: Arch, rows: int, positions: int, b: int) -> dict[str, int]:
    """A no-grad forward of an encoder judge over rows x positions. Per token, read off CPU
    runs (tests/memory): GPT-2 keeps its K/V per layer (use_cache) and ~5 hidden-size plus
    4 MLP-size activations at its MLP; BERT ~3.5 and 2; DeBERTa-v2 materialises its
    disentangled attention (~2.6 score-sized tensors a head) and ~24 hidden-size
    activations, plus one hidden state per layer."""
    e = arch.encoder
    tokens = rows * positions
    if arch.model_type == "gpt2":
        return {"kv cache": 2 * e["layers"] * tokens * e["hidden"] * b,
                "layer": tokens * (5.1 * e["hidden"] + 4 * e["intermediate"]) * b}
    if arch.model_type == "bert":
        return {"layer": int(tokens * (3.5 * e["hidden"] + 2 * e["intermediate"]) * b)}
    return {"hidden states": e["layers"] * tokens * e["hidden"] * b,
            "attention": int(2.6 * rows * e["heads"] * positions ** 2 * 4),
            "layer": int(tokens * 23.7 * e["hidden"] * b)}


def judge_estimate(arch: Arch, *, rows: int, positions: int, new_tokens: int = 0, b: int,
                   what: str) -> Estimate:
    """A judge: a generating decoder (Llama Guard, HarmBench's classifier) or an encoder."""
    if arch.text is not None:
        phases = decoder_generate_phases(arch, rows, positions, new_tokens, b)
    else:
        phases = [Phase("forward", {k: int(v) for k, v in judge_activation_terms(arch, rows, positions, b).items()})]
    return Estimate(what, {"weights": weight_bytes(arch, b)}, phases,
                    {"rows": rows, "positions": positions})
