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
        top = sorted(phase.terms.items(), key=lambda kv: -kv[1])[:3]
        parts = ", ".join(f"{name} {value / GB:.1f}" for name, value in top)
        return (f"{self.what}: {self.peak / GB:.1f} GB at its peak = "
                f"{sum(self.resident.values()) / GB:.1f} GB resident (weights ...) + "
                f"{phase.bytes / GB:.1f} GB in its {phase.name} ({parts})")


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


def phases_table(phases: Iterable[Phase]) -> list[tuple[str, int]]:
    return [(p.name, p.bytes) for p in phases]
