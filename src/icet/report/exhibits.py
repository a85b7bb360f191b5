"""Which model, layers and prompt each of the paper's qualitative exhibits shows in this run.

Kept free of plotting imports: the Snakefile resolves exhibits at parse time.
Layers are the paper's, for a 24-layer encoder; a model with N layers shows
round(l * N / 24) (half up), so the toy's 12-layer ViT shows ICET-9 for the paper's 18.
Exhibits of a model this run lacks (LLaVA-NeXT in the toy) use the run's main model; the
caption names the model actually shown.
"""

from __future__ import annotations

import math

from icet.ground_truth import PLANTED_LABEL
from icet.models.registry import default_layer

PAPER_ENCODER_LAYERS = 24  # CLIP ViT-L/14-336 of LLaVA-1.5, where the paper's layers live


def scale_layer(paper_layer: int, num_layers: int,
                paper_layers: int = PAPER_ENCODER_LAYERS) -> int:
    """The paper's ICET layer on a `num_layers` encoder: proportional, rounded half up."""
    return int(math.floor(paper_layer * num_layers / paper_layers + 0.5))


def resolve_exhibit(spec: dict, models: dict[str, dict], main_model: str,
                    swept: dict[str, list[int]] | None = None) -> dict:
    """Which model, layers (ours and the paper's) and variants one exhibit shows in this run.

    `models` maps names to config entries (architecture, num_layers, lppo); `spec` is report.examples.<x>;
    `swept` the layers each model was swept at: a scaled layer not swept becomes the nearest
    swept one (ties: the lower), so a reduced sweep still shows every exhibit.
    """
    model = spec["model"] if spec.get("model") in models else main_model
    num_layers = models[model]["num_layers"]
    done = sorted((swept or {}).get(model) or range(num_layers + 1))

    def nearest(layer: int) -> int:
        return min(done, key=lambda l: (abs(l - layer), l))

    pairs = [(nearest(scale_layer(l, num_layers)), l) for l in spec["layers"]]
    if spec.get("with_default"):
        # the layer the unmodified model uses (LLaVA: N-1)
        pairs.append((nearest(default_layer(models[model]["architecture"], num_layers, where=model)), None))
    seen, layers, paper = set(), [], []
    for ours, theirs in pairs:
        if ours not in seen:
            seen.add(ours)
            layers.append(ours)
            paper.append(theirs)
    has_aligned = bool(models[model].get("lppo"))
    variants = [v for v in spec.get("variants", ["original"])
                if v == "original" or has_aligned]
    return {"model": model, "requested_model": spec.get("model"), "layers": layers,
            "paper_layers": paper, "testset": spec.get("testset", "cp"),
            "variants": variants, "prompt_id": spec.get("prompt_id")}


def exhibits(specs: dict[str, dict], models: dict[str, dict], main_model: str,
             swept: dict[str, list[int]] | None = None) -> dict[str, dict]:
    """Resolve every configured exhibit (see resolve_exhibit); order kept."""
    return {name: resolve_exhibit(spec, models, main_model, swept)
            for name, spec in specs.items()}



def model_label(label: str, model: str, planted: list[str]) -> str:
    """The run label on one model's figure: with PLANTED_LABEL only when that model is one.
    (The run's caption label names every planted model, which on another model's figure
    reads as that figure's title.)"""
    return f"{label}; {PLANTED_LABEL}" if model in planted else label
