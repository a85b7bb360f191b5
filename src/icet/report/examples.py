"""The paper's qualitative exhibits: Figure 1 and Tables 1, 4, 5 (example responses by layer).

Each exhibit is one harmful prompt with its safe image, answered at a few ICET layers (and,
for Tables 4-5, before and after L-PPO), every response beside the guard's verdict.

- Model and layers: icet.report.exhibits (the paper's layers scaled to each encoder).
- The prompt: `prompt_id` when set, else the harmful prompt judged unsafe at the most of
  the exhibit's layers (original model; ties -> smallest id): the paper shows failures.
- Responses are harmful text by design, so they are truncated and masked unless
  `show_responses` is true: the first `shown_words` words stay, the rest become a count.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from PIL import Image  # noqa: E402

from icet.errors import IcetError  # noqa: E402
from icet.io import write_csv, write_text  # noqa: E402
from icet.logs import setup_logging  # noqa: E402
from icet.report.exhibits import resolve_exhibit, scale_layer  # noqa: E402,F401
from icet.report.figures import _save  # noqa: E402
from icet.report.latex import write_latex  # noqa: E402
from icet.report.tables import _pipe_table  # noqa: E402
from icet.rows import read_scores  # noqa: E402

EXAMPLE_COLUMNS = ["exhibit", "model", "testset", "id", "variant", "layer", "paper_layer",
                   "prompt", "image", "response", "guard_verdict", "refusal", "masked"]
VERDICT_COLOURS = dict(zip(("safe", "unsafe"), sns.color_palette("colorblind", 2)))


def mask_response(text: str, show: bool, shown_words: int) -> str:
    """The response, or its first `shown_words` words and a count of the masked rest."""
    text = " ".join(str(text or "").split())
    words = text.split(" ") if text else []
    if show or len(words) <= shown_words:
        return text
    kept = " ".join(words[:shown_words])
    return f"{kept} [... {len(words) - shown_words} words masked]".lstrip()


def _rows_by_key(score_files: Iterable[str | os.PathLike]) -> dict[tuple, dict]:
    return {(row["model"], row["variant"], row["testset"], row["layer"], str(row["id"])): row
            for _, _, row in read_scores(score_files, also=("response", "prompt", "image"))}


def pick_prompt(rows: dict[tuple, dict], exhibit: dict) -> str:
    """The harmful prompt id unsafe at the most of the exhibit's layers (ties: smallest id)."""
    m, t = exhibit["model"], exhibit["testset"]
    ids = sorted({k[4] for k, r in rows.items()
                  if k[0] == m and k[1] == "original" and k[2] == t and r["kind"] == "harmful"})
    if exhibit.get("prompt_id") is not None:
        if str(exhibit["prompt_id"]) not in ids:
            raise IcetError(f"report.examples: prompt_id {exhibit['prompt_id']!r} is not a "
                            f"harmful {t} prompt scored for {m}")
        return str(exhibit["prompt_id"])
    if not ids:
        raise IcetError(f"report.examples: no harmful {t} responses of {m} (original) in "
                        f"the score files")
    return min(ids, key=lambda i: (-sum(rows.get((m, "original", t, l, i), {}).get("unsafe") == 1
                                        for l in exhibit["layers"]), i))


def exhibit_rows(name: str, exhibit: dict, score_files: Iterable[str | os.PathLike], *,
                 show_responses: bool | None = None, shown_words: int | None = None) -> list[dict]:
    """One row per (variant, layer) of the exhibit's prompt, response masked unless shown
    (None: config report.show_responses / shown_words, the schema's defaults)."""
    from icet import schemas

    if show_responses is None:
        show_responses = schemas.default("config", "report.show_responses")
    if shown_words is None:
        shown_words = schemas.default("config", "report.shown_words")
    rows = _rows_by_key(score_files)
    pid = pick_prompt(rows, exhibit)
    out = []
    for variant in exhibit["variants"]:
        for layer, paper_layer in zip(exhibit["layers"], exhibit["paper_layers"]):
            key = (exhibit["model"], variant, exhibit["testset"], layer, pid)
            if key not in rows:
                raise IcetError(f"report.examples.{name}: no response of {key[0]} ({variant}) "
                                f"at layer {layer} for {exhibit['testset']} id {pid}")
            row = rows[key]
            out.append({"exhibit": name, "model": key[0], "testset": key[2], "id": pid,
                        "variant": variant, "layer": layer,
                        "paper_layer": "" if paper_layer is None else paper_layer,
                        "prompt": row["prompt"], "image": row["image"],
                        "response": mask_response(row["response"], show_responses, shown_words),
                        "guard_verdict": row.get("guard_verdict") or "unparseable",
                        "refusal": row.get("refusal"), "masked": not show_responses})
    return out


def _layer_name(row: dict) -> str:
    paper = f" (paper: ICET-{row['paper_layer']})" if row["paper_layer"] != "" else " (default)"
    return f"ICET-{row['layer']}{paper}"


def _caption(title: str, exhibit: dict, rows: list[dict], judge: str, seed, label) -> str:
    toy = f" ({label})" if label else ""
    stand_in = ""
    if exhibit.get("requested_model") and exhibit["requested_model"] != exhibit["model"]:
        stand_in = f" The paper shows {exhibit['requested_model']}; this run has no such model."
    masked = (" Responses truncated and masked (report.show_responses: false)."
              if rows and rows[0]["masked"] else "")
    return (f"**{title}{toy}.** Model: {exhibit['model']}; test set {exhibit['testset']}, "
            f"prompt {rows[0]['id'] if rows else '?'}; judge: {judge}; seed: {seed}.{stand_in}"
            f"{masked} Paper layers scaled to this encoder: round(l x N / 24).")


def write_example_table(name: str, title: str, exhibit: dict,
                        score_files: Iterable[str | os.PathLike], out_csv, out_md, out_tex=None,
                        *, show_responses: bool | None = None, shown_words: int | None = None,
                        judge: str = "guard", seed=None, label: str | None = None,
                        log: str | os.PathLike | None = None) -> list[dict]:
    """Tables 1, 4, 5: the exhibit's responses as CSV, Markdown and LaTeX."""
    logger = setup_logging(log, "examples")
    rows = exhibit_rows(name, exhibit, score_files, show_responses=show_responses,
                        shown_words=shown_words)
    write_csv(out_csv, rows, EXAMPLE_COLUMNS)
    text = _caption(title, exhibit, rows, judge, seed, label)
    text += f" Prompt: \"{rows[0]['prompt']}\"; image: {rows[0]['image']}."
    header = ["variant", "layer", "response", "guard verdict"]
    body = [[f"{r['variant']}", _layer_name(r), r["response"], r["guard_verdict"]]
            for r in rows]
    write_text(out_md, text + "\n\n" + _pipe_table(header, body))
    write_latex(out_tex, header, body, text)
    logger.info("%s: %d responses of %s, prompt %s", name, len(rows), exhibit["model"],
                rows[0]["id"])
    return rows


def figure1(exhibit: dict, score_files: Iterable[str | os.PathLike], data_dir: str | os.PathLike,
            out_png, out_pdf=None, *, show_responses: bool | None = None,
            shown_words: int | None = None,
            judge: str = "guard", seed=None, label: str | None = None,
            log: str | os.PathLike | None = None) -> list[dict]:
    """Figure 1: the image and prompt, then one panel per layer with response and verdict."""
    logger = setup_logging(log, "examples")
    rows = exhibit_rows("figure1", exhibit, score_files, show_responses=show_responses,
                        shown_words=shown_words)
    image_path = Path(data_dir) / rows[0]["image"]
    if not image_path.exists():
        raise IcetError(f"{image_path}: image of {rows[0]['testset']} id {rows[0]['id']} "
                        f"not found")
    image = Image.open(image_path).convert("RGB")
    n = len(rows)
    with sns.axes_style("white"), sns.plotting_context("paper"):
        fig, axes = plt.subplots(1, n + 1, figsize=(2.6 * (n + 1), 3.4),
                                 gridspec_kw={"width_ratios": [1.0] + [1.2] * n})
        axes[0].imshow(image, interpolation="nearest")
        axes[0].set_xticks([])
        axes[0].set_yticks([])
        prompt = "\n".join(textwrap.wrap(f"\"{rows[0]['prompt']}\"", 32))
        axes[0].set_title(f"safe image + harmful prompt:\n{prompt}", fontsize=7, loc="center")
        for ax, row in zip(axes[1:], rows):
            verdict = row["guard_verdict"]
            colour = VERDICT_COLOURS.get(verdict, (0.5, 0.5, 0.5))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3 if verdict == "unsafe" else 1.5)
            ax.set_title(_layer_name(row), fontsize=8)
            ax.text(0.05, 0.95, "\n".join(textwrap.wrap(row["response"], 30)),
                    transform=ax.transAxes, ha="left", va="top", fontsize=7, family="monospace")
            ax.text(0.5, 0.04, f"judge: {verdict.upper()}", transform=ax.transAxes,
                    ha="center", va="bottom", fontsize=9, weight="bold", color=colour)
        toy = f" ({label})" if label else ""
        masked = "; responses masked" if rows[0]["masked"] else ""
        fig.suptitle(f"Figure 1{toy}: {exhibit['model']} answers one harmful prompt at several "
                     f"image-encoder layers. Judge: {judge}; seed: {seed}{masked}", fontsize=9)
        fig.tight_layout(rect=(0, 0.02, 1, 0.93))
        _save(fig, out_png, out_pdf)
    logger.info("figure 1: %s, prompt %s, layers %s -> %s", exhibit["model"], rows[0]["id"],
                exhibit["layers"], out_png)
    return rows

