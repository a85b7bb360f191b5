"""One interface for every judge, and the registry the workflow loops over.

A judge plug-in is a `Judge` subclass registered under its config block name
(`judges.<name>` in config.yaml). It declares everything the rest of icet needs, so adding a
judge is its module, its config block (schema + config.yaml), its mirror entry, its tests
and its docs, nothing else:

- `name`: the config block; `title`: how tables name it when the config gives no repo;
- `columns`: the score-row columns `score` writes, in order;
- `role`: what statistics and tables do with it (ROLES): "asr" (a binary `unsafe`-like
  column, 1 / 0 / null; the first ASR judge is the paper's ASR), "toxicity" and "reward"
  (continuous scores), "refusal" (a boolean), "utility" (VQA; not run by `icet.score`);
- `metric`: (statistics metric name, score column, scale) or None;
- `required`: every score file carries its columns (the paper's Table 2 measures);
- `order`: where it runs and where its metric comes in the tables (registry order);
- `download`: "snapshot" (Hub repo@revision), "detoxify" (checkpoint URL + BERT config
  repo) or None; `toy`: the toy judge folder that serves it in a toy run, or None;
- `prompt_keys`: which row key it is shown as the prompt, the first the row has (default
  ("prompt",), the text the model saw; HarmBench's classifier takes ("request", "prompt"):
  a HarmBench behavior is the plain request, not a jailbreak wrapped around it). The last
  is always "prompt", which every row has;
- `load(spec, device)`: the judge from its schema-filled config block (`spec["path"]` is the
  resolved folder); `score(prompts, responses) -> {column: values}`, one value per pair.

Defaults live only in the config schema (icet/schemas/config.schema.yaml):
`icet.config.judge_settings` fills a block from it before `load` sees it, and a judge's
model class built directly (a test, a bench) takes what it is not given from there too
(`schema_default`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

ROLES = ("asr", "toxicity", "reward", "refusal", "utility")
DOWNLOADS = ("snapshot", "detoxify", None)


def schema_default(judge: str, key: str, given: Any = None) -> Any:
    """`given`, or (None) the config schema's default of judges.<judge>.<key>."""
    from icet import schemas

    return schemas.default("config", f"judges.{judge}.{key}") if given is None else given


class Judge(ABC):
    """A judge of (prompt, response) pairs; subclasses fill the class attributes."""

    name: ClassVar[str]
    title: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    role: ClassVar[str]
    metric: ClassVar[tuple[str, str, float] | None] = None
    order: ClassVar[int] = 100
    required: ClassVar[bool] = False
    download: ClassVar[str | None] = "snapshot"
    toy: ClassVar[str | None] = None
    prompt_keys: ClassVar[tuple[str, ...]] = ("prompt",)

    @classmethod
    @abstractmethod
    def load(cls, spec: dict, device: str = "cpu") -> "Judge":
        """The judge, loaded once from its filled config block."""

    @abstractmethod
    def score(self, prompts: list[str], responses: list[str]) -> dict[str, list]:
        """{column: one value per (prompt, response) pair} for every column in `columns`."""

    @classmethod
    def summarise(cls, rows: list[dict], spec: dict, logger) -> None:
        """Log what a reader of the log should know about the scored rows (optional)."""


REGISTRY: dict[str, type[Judge]] = {}


def register(cls: type[Judge]) -> type[Judge]:
    """Class decorator: add a judge under its config block name."""
    if cls.role not in ROLES or cls.download not in DOWNLOADS:
        raise ValueError(f"judge {cls.name}: role {cls.role!r} / download {cls.download!r}")
    if not cls.prompt_keys or cls.prompt_keys[-1] != "prompt":
        raise ValueError(f"judge {cls.name}: prompt_keys {cls.prompt_keys!r} must end with "
                         f"'prompt' (every row has one)")
    if cls.name in REGISTRY:
        raise ValueError(f"judge {cls.name} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Judge]]:
    """Every judge plug-in, by `order`. Importing each module of this package registers the
    built-in ones, so a new judge module needs no list to be added to."""
    import importlib
    import pkgutil

    import icet.judges as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"icet.judges.{module.name}")
    return dict(sorted(REGISTRY.items(), key=lambda item: (item[1].order, item[0])))


def judge_class(name: str) -> type[Judge]:
    from icet.errors import IcetError

    judges = registry()
    if name not in judges:
        raise IcetError(f"judges: unknown judge {name!r} (known: {', '.join(judges)})")
    return judges[name]


def named(judges: dict, roles: tuple[str, ...] = ROLES) -> list[type[Judge]]:
    """The plug-ins a config's `judges` block names, with a role in `roles`, in registry order.

    A block set to false (or null) is switched off: a config merged on top of another (the
    toy on the paper config) so drops a judge it cannot serve."""
    for name in judges:
        judge_class(name)
    on = {name for name, spec in judges.items() if spec not in (None, False)}
    return [cls for name, cls in registry().items() if name in on and cls.role in roles]


SCORED_ROLES = ("asr", "toxicity", "reward", "refusal")  # the judges of rule score_testset

# A judge's weights load in an explicit dtype, never transformers' default ("auto": whatever
# the checkpoint's config.json says, fp32 for some): "bf16" = the LLM judges (Llama Guard,
# HarmBench's 13B classifier) on a GPU, their checkpoints' own dtype, and fp32 on a CPU,
# where bf16 matmuls are slow; "fp32" = the small classifiers (reward models, Detoxify)
# everywhere: their scores are continuous, and a 0.8B model is 3 GB in fp32.
JUDGE_PRECISIONS = ("bf16", "fp32")


def judge_dtype(device: str, precision: str):
    """The torch dtype a judge of `precision` (JUDGE_PRECISIONS) loads in on `device`."""
    import torch

    if precision not in JUDGE_PRECISIONS:
        raise ValueError(f"judge precision {precision!r} is not one of {JUDGE_PRECISIONS}")
    if precision == "bf16" and str(device).startswith("cuda"):
        from icet.runtime import check_native_bf16

        check_native_bf16(str(device))
        return torch.bfloat16
    return torch.float32


def required() -> list[type[Judge]]:
    """The judges every score file must have (`required`), in registry order."""
    return [cls for cls in registry().values() if cls.required]
