"""Score sweep responses with every judge: one scores JSONL per model x variant x test set.

Rows are the response rows (docs/contracts.md) plus guard_verdict, guard_categories,
guard_raw (the guard's decoded answer, kept for audit), unsafe (1 / 0 / null when the guard
answer is unparseable: missing, never safe), toxicity, reward, reward_truncated (null, or
"prompt" / "response": what had to be cut to fit the reward model, see
icet.judges.reward.fit_prompt) and refusal. Every judge sees
the response after `clean_response`. Identical (prompt, response) pairs, common across
layers (the same refusal at many l), are judged once, in sorted order, so the scores do not
depend on how rows were split into shards or batches.
"""

from __future__ import annotations

import time
from collections import Counter

from icet.errors import IcetError
from icet.io import write_jsonl
from icet.judges.guard import UNPARSEABLE, UNSAFE, GuardJudge
from icet.judges.keyword import KeywordJudge
from icet.judges.reward import RewardModel
from icet.judges.text import clean_response
from icet.judges.toxicity import ToxicityJudge
from icet.logs import setup_logging
from icet.rows import RESPONSE_KEYS, read_responses  # noqa: F401  (the response-row contract)
from icet.shards import expand

# Defaults for the optional knobs of each judge; the folder/checkpoint paths are required.
JUDGE_DEFAULTS = {
    "guard": {"batch_size": 8, "max_new_tokens": 20},
    "reward": {"batch_size": 8, "max_length": 512, "input_format": "auto"},
    "toxicity": {"batch_size": 32},
    "keyword": {"mode": "anywhere", "extra_phrases": []},
}
JUDGE_REQUIRED = {"guard": ("path",), "reward": ("path",),
                  "toxicity": ("checkpoint", "config_dir"), "keyword": ()}


def judge_settings(judges: dict) -> dict:
    """`judges` with defaults filled in; IcetError naming any missing or unknown key."""
    settings = {}
    for name, defaults in JUDGE_DEFAULTS.items():
        given = dict(judges.get(name) or {})
        missing = [k for k in JUDGE_REQUIRED[name] if not given.get(k)]
        if missing:
            raise IcetError(f"judges.{name}: missing {', '.join(missing)}")
        unknown = sorted(set(given) - set(defaults) - set(JUDGE_REQUIRED[name]))
        if unknown:
            raise IcetError(f"judges.{name}: unknown key(s) {', '.join(unknown)}")
        settings[name] = {**defaults, **given}
    unknown = sorted(set(judges) - set(JUDGE_DEFAULTS))
    if unknown:
        raise IcetError(f"judges: unknown judge(s) {', '.join(unknown)}")
    return settings


def score_responses(response_files: list[str], out: str, judges: dict,
                    device: str = "cpu", threads: int | None = None, log=None) -> None:
    """Judge every response in `response_files` and write the scores JSONL to `out`.

    `response_files` are shard files or sweep indexes (icet.shards) standing for them.
    """
    from icet.runtime import configure, resolve_device

    configure(threads)
    device = resolve_device(device)
    response_files = expand(response_files)
    logger = setup_logging(log, "score")
    settings = judge_settings(judges)
    rows = read_responses(response_files)
    cleaned = [clean_response(r["response"]) for r in rows]
    pairs = sorted({(r["prompt"], c) for r, c in zip(rows, cleaned)})
    prompts, responses = [p for p, _ in pairs], [c for _, c in pairs]
    texts = sorted(set(cleaned))
    logger.info("%d responses from %d file(s): %d distinct (prompt, response) pairs",
                len(rows), len(response_files), len(pairs))

    started = time.perf_counter()
    guard_cfg = settings["guard"]
    guard = GuardJudge(guard_cfg["path"], device, guard_cfg["batch_size"], guard_cfg["max_new_tokens"])
    verdicts = dict(zip(pairs, guard.judge(prompts, responses)))
    del guard
    logger.info("guard %s done (%.1f s elapsed)", guard_cfg["path"], time.perf_counter() - started)

    reward_cfg = settings["reward"]
    reward_model = RewardModel(reward_cfg["path"], device, reward_cfg["batch_size"],
                               reward_cfg["max_length"], reward_cfg["input_format"])
    reward_scores, reward_cuts = reward_model.score_with_truncation(prompts, responses)
    rewards = dict(zip(pairs, zip(reward_scores, reward_cuts)))
    del reward_model
    cut = Counter(reward_cuts)
    if cut["prompt"] or cut["response"]:
        logger.warning("reward: %d of %d distinct pairs over max_length %d: prompt cut from the "
                       "left, response whole in %d; response cut too (longer than max_length "
                       "alone) in %d", cut["prompt"] + cut["response"], len(pairs),
                       reward_cfg["max_length"], cut["prompt"], cut["response"])
    logger.info("reward %s done (%.1f s elapsed)", reward_cfg["path"], time.perf_counter() - started)

    tox_cfg = settings["toxicity"]
    toxicity_judge = ToxicityJudge(tox_cfg["checkpoint"], tox_cfg["config_dir"], device,
                                   tox_cfg["batch_size"])
    toxicity = dict(zip(texts, toxicity_judge.score(texts)))
    del toxicity_judge
    logger.info("toxicity %s done (%.1f s elapsed)", tox_cfg["checkpoint"], time.perf_counter() - started)

    keyword = KeywordJudge(settings["keyword"]["mode"], settings["keyword"]["extra_phrases"])

    scored = []
    for row, text in zip(rows, cleaned):
        guard_row = verdicts[(row["prompt"], text)]
        verdict = guard_row["guard_verdict"]
        scored.append({
            **row,
            **guard_row,
            "unsafe": None if verdict == UNPARSEABLE else int(verdict == UNSAFE),
            "toxicity": toxicity[text],
            "reward": rewards[(row["prompt"], text)][0],
            "reward_truncated": rewards[(row["prompt"], text)][1],
            "refusal": keyword.is_refusal(text),
        })
    write_jsonl(out, scored)

    counts = Counter(r["guard_verdict"] for r in scored)
    logger.info("guard verdicts: %s", ", ".join(f"{k}={counts[k]}" for k in sorted(counts)))
    if counts[UNPARSEABLE]:
        logger.warning("%d of %d guard answers unparseable: recorded as unsafe=null",
                       counts[UNPARSEABLE], len(scored))
    logger.info("refusals (keyword, %s): %d of %d", keyword.mode,
                sum(r["refusal"] for r in scored), len(scored))
    logger.info("wrote %d scored rows to %s", len(scored), out)
