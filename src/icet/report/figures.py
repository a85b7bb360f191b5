"""Figure 3 (ASR, toxicity, reward against the image-encoder layer) and L-PPO training curves.

PNG bytes are reproducible: the Agg backend, a fixed size and DPI, and no "Software" or
date metadata, so a rerun on the same scores rewrites an identical file.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # headless and deterministic; set before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from icet.errors import IcetError  # noqa: E402
from icet.io import atomic_path  # noqa: E402
from icet.logs import setup_logging  # noqa: E402
from icet.stats import (VARIANTS, bootstrap_settings, layer_groups, layer_metrics,  # noqa: E402
                        load_scores)

PANELS = [("asr", "ASR (%)"), ("ts", "toxicity x 100 (TS)"), ("tr", "reward (TR)")]
PALETTE = "colorblind"  # seaborn's colour-blind-safe set (Wong-like); lines also differ by style
LINESTYLES = {"original": "-", "aligned": "--"}
MARKERS = {"original": "o", "aligned": "s"}
TRAINING_COLUMNS = ["step", "reward", "kl", "value_loss", "clip_frac", "approx_kl", "entropy",
                    "policy_grad_norm", "lr", "layer"]
DPI = 120  # readable at paper-column width, small files


def _save(fig, out_png: str | os.PathLike, out_pdf: str | os.PathLike | None = None) -> None:
    """Atomic PNG (and PDF, vector for papers) writes without metadata that changes per run."""
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    if out_pdf is not None:
        with atomic_path(out_pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"Creator": None, "Producer": None,
                                                     "CreationDate": None})
    plt.close(fig)


def figure3(score_files: Iterable[str | os.PathLike], groups: dict[str, Sequence[int]],
            out_png: str | os.PathLike, caption_info: dict, bootstrap: dict | None = None, *,
            default_layer: int | None = None, num_layers: int | None = None,
            kinds: Sequence[str] | None = None, out_pdf: str | os.PathLike | None = None,
            log: str | os.PathLike | None = None) -> None:
    """Plot ASR/TS/TR per ICET layer: colour = test set, line style = original/aligned.

    Bands are the per-layer bootstrap CIs, layer groups are shaded, and the layer the model
    was trained with (`default_layer`, default N-1 as in LLaVA) is a dashed vertical line.
    `caption_info` names the run: keys judge, seed, model, label (e.g. "toy").
    """
    logger = setup_logging(log, "figures")
    settings = bootstrap_settings(bootstrap)
    frame = load_scores(score_files, kinds=kinds)
    if frame.empty:
        raise IcetError("figure 3: no score rows in the given files")
    top = int(frame["layer"].max()) if num_layers is None else num_layers
    expanded = layer_groups(top, dict(groups))
    default_layer = top - 1 if default_layer is None else default_layer
    table = pd.DataFrame(layer_metrics(frame, settings))
    testsets = sorted(table["testset"].unique())
    colours = dict(zip(testsets, sns.color_palette(PALETTE, len(testsets))))

    models = ", ".join(sorted(table["model"].unique()))
    label = caption_info.get("label")
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig = _figure3_axes(table, expanded, colours, default_layer, top)
        fig.suptitle(f"Safety across image-encoder layers{f' ({label})' if label else ''}: "
                     f"model {caption_info.get('model', models)}, judge "
                     f"{caption_info.get('judge', 'unnamed')}, seed "
                     f"{caption_info.get('seed', 'unknown')}; bands: "
                     f"{round(settings['ci'] * 100)}% bootstrap CI over "
                     f"{'prompts' if settings['unit'] == 'prompt' else 'rows'}", fontsize=9)
        fig.tight_layout(rect=(0, 0, 0.86, 0.95))
        _save(fig, out_png, out_pdf)
    logger.info("figure 3: %d layers, %d test sets -> %s", table["layer"].nunique(),
                len(testsets), out_png)


def _figure3_axes(table: pd.DataFrame, expanded: dict[str, list[int]], colours: dict,
                  default_layer: int, top: int):
    """The three panels and the shared legend (style set by the caller's context)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharex=True)
    for ax, (metric, ylabel) in zip(axes, PANELS):
        for shade, (name, layers) in enumerate(expanded.items()):
            ax.axvspan(layers[0] - 0.5, layers[-1] + 0.5, color="0.5",
                       alpha=0.08 if shade % 2 == 0 else 0.18, lw=0)
            ax.text((layers[0] + layers[-1]) / 2, 1.0, name, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, color="0.3")
        ax.axvline(default_layer, color="black", ls="--", lw=1.0)
        for (model, variant, testset), part in table.groupby(["model", "variant", "testset"],
                                                             sort=True):
            part = part.sort_values("layer")
            label = f"{testset} / {variant}" if table["model"].nunique() == 1 \
                else f"{model}: {testset} / {variant}"
            ax.plot(part["layer"], part[metric], color=colours[testset],
                    ls=LINESTYLES[variant], marker=MARKERS[variant], ms=3, lw=1.4, label=label)
            ax.fill_between(part["layer"], part[f"{metric}_lo"], part[f"{metric}_hi"],
                            color=colours[testset], alpha=0.15, lw=0)
        ax.set_xlabel("image-encoder layer l (ICET-l)")
        ax.set_ylabel(ylabel)
        ax.set_xlim(-0.5, top + 0.5)
        if metric == "asr":  # a rate: 0 at the bottom, and a visible range when all are 0
            ax.set_ylim(0, max(5.0, ax.get_ylim()[1]))
    handles, labels = axes[0].get_legend_handles_labels()
    split = [label.rsplit(" / ", 1) for label in labels]  # "[model: ]testset", variant
    order = sorted(range(len(labels)), key=lambda i: (split[i][0], VARIANTS.index(split[i][1])))
    handles = [handles[i] for i in order] + [plt.Line2D([], [], color="black", ls="--", lw=1.0)]
    labels = [labels[i] for i in order] + [f"default layer {default_layer}"]
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.86, 0.5), fontsize=7,
               frameon=False)
    return fig


def training_curves(metrics_csv: str | os.PathLike, out_png: str | os.PathLike, *,
                    title: str | None = None, out_pdf: str | os.PathLike | None = None,
                    log: str | os.PathLike | None = None) -> None:
    """Plot L-PPO reward, KL to the reference, value loss, clip fraction, approx KL between
    updates (trl's), entropy, the LM's gradient norm and lr against step (each a step's mean
    over its updates; updates.csv beside metrics.csv has them per update).

    One line per training layer l when the CSV holds several runs.
    """
    logger = setup_logging(log, "figures")
    if not os.path.exists(metrics_csv):
        raise IcetError(f"{metrics_csv}: file not found")
    try:
        frame = pd.read_csv(metrics_csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise IcetError(f"{metrics_csv}: unreadable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in TRAINING_COLUMNS if c not in frame.columns]
    if missing:
        raise IcetError(f"{metrics_csv}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise IcetError(f"{metrics_csv}: no rows")
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig = _training_axes(frame)
        fig.suptitle(title or f"L-PPO training ({os.path.basename(metrics_csv)})", fontsize=9)
        fig.tight_layout()
        _save(fig, out_png, out_pdf)
    logger.info("training curves: %d rows, layers %s -> %s", len(frame),
                sorted(frame["layer"].unique().tolist()), out_png)


def _training_axes(frame: pd.DataFrame):
    """One panel per logged quantity, one line per training layer."""
    panels = [c for c in TRAINING_COLUMNS if c not in ("step", "layer")]
    fig, axes = plt.subplots(2, 4, figsize=(14, 5.5), sharex=True)
    layers = sorted(frame["layer"].unique())
    colours = dict(zip(layers, sns.color_palette(PALETTE, len(layers))))
    for ax, column in zip(axes.flat, panels):
        for layer in layers:
            part = frame[frame["layer"] == layer].sort_values("step")
            ax.plot(part["step"], part[column], color=colours[layer], lw=1.2,
                    label=f"L-PPO layer {layer}")
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("step")
    axes.flat[0].legend(fontsize=7, frameon=False)
    return fig
