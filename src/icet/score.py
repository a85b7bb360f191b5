"""Score sweep responses with every judge: one scores JSONL per model x variant x test set.

The judges are the plug-ins (icet.judges.base) that the `judges` block names, run one at a
time in registry order. With the paper's four, rows are the response rows
(docs/contracts.md) plus guard_verdict, guard_categories,
guard_raw (the guard's decoded answer, kept for audit), unsafe (1 / 0 / null when the guard
answer is unparseable: missing, never safe), toxicity, reward, reward_truncated (null, or
"prompt" / "response": what had to be cut to fit the reward model, see
icet.judges.reward.fit_prompt) and refusal; each further judge adds its declared columns
(e.g. harmbench_verdict, harmbench_unsafe). Every judge sees
the response after `clean_response`, and as the prompt the first of its `prompt_keys` a row
has: the prompt the model saw, or for HarmBench's classifier the plain `request` a jailbreak
prompt wraps where the data set gives one (MR). Identical pairs, common across layers (the
same refusal at many l), are judged once per judge, in sorted order, so the scores do not
depend on how rows were split into shards or batches.
"""

from __future__ import annotations

import time

from icet.errors import IcetError
from icet.io import write_jsonl
from icet.judges.base import SCORED_ROLES, named, required
from icet.judges.text import clean_response
from icet.logs import setup_logging
from icet.rows import RESPONSE_KEYS, read_responses  # noqa: F401  (the response-row contract)
from icet.shards import expand


def judge_settings(judges: dict) -> dict:
    """The scoring judges' blocks, schema defaults filled (icet.config.judge_settings), every
    judge Table 2 needs present and every model judge given its folder (`path`)."""
    from icet.config import judge_settings as filled

    settings = filled(judges)
    missing = [cls.name for cls in required() if cls.name not in settings]
    if missing:
        raise IcetError(f"judges: missing {', '.join(missing)} (every score file needs them)")
    for cls in named(settings, SCORED_ROLES):
        if cls.download is not None and not settings[cls.name].get("path"):
            raise IcetError(f"judges.{cls.name}: missing path")
    return {cls.name: settings[cls.name] for cls in named(settings, SCORED_ROLES)}


def score_responses(response_files: list[str], out: str, judges: dict,
                    device: str = "cpu", threads: int | None = None, log=None,
                    batch_sizes: dict[str, int] | None = None) -> None:
    """Judge every response in `response_files` and write the scores JSONL to `out`.

    `response_files` are shard files or sweep indexes (icet.shards) standing for them, each
    held to what its index records. `batch_sizes` ({judge: n}) size each judge's batches:
    a tuning key the rule passes apart from the judges' settings (icet.config.split_tuning).
    """
    from icet.memory.jobs import check_judge_fits
    from icet.runtime import configure, release_memory, resolve_device

    logger = setup_logging(log, "score")
    configure(threads)
    device = resolve_device(device)
    response_files = expand(response_files)
    settings = judge_settings({judge: {**spec, "batch_size": batch_sizes[judge]}
                               if isinstance(spec, dict) and judge in (batch_sizes or {})
                               else spec for judge, spec in judges.items()})
    rows = read_responses(response_files)
    cleaned = [clean_response(r["response"]) for r in rows]
    logger.info("%d responses from %d file(s)", len(rows), len(response_files))

    started = time.perf_counter()
    scored = [dict(row) for row in rows]
    judges_run = named(settings, SCORED_ROLES)
    for cls in judges_run:
        shown = [(shown_prompt(row, cls.prompt_keys), text) for row, text in zip(rows, cleaned)]
        pairs = sorted(set(shown))
        logger.info("%s: %d distinct (%s, response) pairs", cls.name, len(pairs),
                    " / ".join(cls.prompt_keys))
        check_judge_fits(cls.name, settings[cls.name], device)  # one line before loading if too big
        judge = cls.load(settings[cls.name], device)
        values = judge.score([p for p, _ in pairs], [c for _, c in pairs])
        if list(values) != list(cls.columns) or any(len(v) != len(pairs) for v in values.values()):
            raise IcetError(f"judge {cls.name}: scored columns {list(values)}, declared "
                            f"{list(cls.columns)}, one value per pair")
        del judge  # one judge's weights in memory at a time:
        release_memory(device)  # and the next one gets the GPU memory the allocator kept
        index = {pair: i for i, pair in enumerate(pairs)}
        for row, pair in zip(scored, shown):
            row.update({column: column_values[index[pair]]
                        for column, column_values in values.items()})
        logger.info("%s %s done (%.1f s elapsed)", cls.name,
                    settings[cls.name].get("path", "(no model)"), time.perf_counter() - started)

    write_jsonl(out, scored)
    for cls in judges_run:
        cls.summarise(scored, settings[cls.name], logger)
    logger.info("wrote %d scored rows to %s", len(scored), out)


def shown_prompt(row: dict, keys: tuple[str, ...]) -> str:
    """What a judge is shown as the prompt: the first of its `prompt_keys` the row has (the
    last is "prompt", which every response row has: icet.judges.base.register)."""
    return next(row[key] for key in keys if key in row)
