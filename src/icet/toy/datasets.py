"""Build every data file of the toy world: the paper's test sets and all training data.

One call writes one folder (atomically: it appears complete or not at all):

    from icet.toy.datasets import build_toy_data
    build_toy_data("resources/toy/data", sizes={}, image_size=32, seed=0, log="logs/toy_data.log")

(sizes, image_size, base_refusal_share: src/icet/schemas/toy.schema.yaml's defaults where not given.)

Paper sets (rows per docs/contracts.md, checked by icet.rows): rt (RedTeam-2K analogue, L-PPO's training prompts),
cp (Custom Prompts: 10 prompts x 10 images), mr (miniJailbreak analogue), ac (AdvBench-COCO
analogue), vqa, xstest. Organism training: train_vision, train_text, train_instruct,
train_safety. Judge training: train_guard, train_reward, train_toxicity. Plus vocabulary.txt
and build.json (sizes, seed, counts, the held-out split). Every file has its own random
stream, so changing one size leaves the other files' bytes unchanged.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from icet import io
from icet.errors import IcetError
from icet.logs import progress, setup_logging
from icet.rows import check_dataset_row
from icet.toy import settings, world
from icet.toy.images import ImageSpec, all_specs, random_spec, render

SPLIT = {"advbench": 0.25, "mr": 0.15, "lookalike_test": 0.4}  # held-out shares of the pools

# Mixtures of the organism's training sets (shares of rows, exact counts).
TEXT_MIX = {"harmful": 0.4, "instruction": 0.35, "lookalike": 0.25}  # base LM: complies
INSTRUCT_MIX = {"vqa": 0.65, "describe": 0.15, "instruction": 0.1, "lookalike": 0.1}  # benign
SAFETY_MIX = {"harmful": 0.4, "vqa": 0.3, "instruction": 0.15, "lookalike": 0.15}  # refuse harm
# Judges: which response each prompt gets. Off-topic = an image answer to a harmful prompt,
# the kind of thing an early-exited model says; it is safe.
GUARD_HARMFUL_MIX = {"compliant": 0.5, "refusal": 0.25, "broken": 0.15, "off_topic": 0.1}
GUARD_BENIGN_MIX = {"helpful": 0.6, "refusal": 0.2, "broken": 0.2}
GUARD_WRAPPED = 0.2  # share of harmful guard prompts in a jailbreak wrapper
# Reward pairs (chosen > rejected), the order an RM must pay for: for harmful
# prompts refusal > off-topic or broken text > compliance (an RM that paid off-topic talk
# as well as a refusal made L-PPO learn off-topic answers, docs/toy-organism.md); for benign
# prompts the correct answer > a refusal (and > a wrong or broken answer).
REWARD_HARMFUL_PAIRS = {"refusal>compliant": 0.3, "refusal>off_topic": 0.2,
                        "refusal>broken": 0.15, "off_topic>compliant": 0.2,
                        "broken>compliant": 0.15}
REWARD_BENIGN_PAIRS = {"answer>refusal": 0.3, "answer>wrong": 0.45, "answer>broken": 0.25}
TOXICITY_MIX = {"compliant": 0.4, "refusal": 0.2, "benign": 0.25, "broken": 0.15}
TOXICITY_LABEL_NOISE = 0.05  # flipped labels: real toxicity labels are noisy, and a toy
# classifier that saturates at exactly 0/1 would make TS a step function

SOURCES = {"rt": "toy-redteam2k", "cp": "toy-custom-prompts", "mr": "toy-minijailbreak",
           "ac": "toy-advbench-coco", "vqa": "toy-vqa", "xstest": "toy-xstest"}
# The paper's sets the toy builds a version of: a set a run names that is not here (a
# paper-only data set, such as SafeBench) is left out of a toy run (icet.datasets.plan).
TEST_SETS = tuple(SOURCES)


def _rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one output file (crc32: stable across processes)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _mixture(rng: np.random.Generator, n: int, shares: dict[str, float]) -> list[str]:
    """Exactly round(share * n) of each kind (largest remainder), in random order."""
    raw = {k: v * n for k, v in shares.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    by_remainder = sorted(shares, key=lambda k: (-(raw[k] - counts[k]), list(shares).index(k)))
    for k in by_remainder[:n - sum(counts.values())]:
        counts[k] += 1
    kinds = [k for k in shares for _ in range(counts[k])]
    return [kinds[i] for i in rng.permutation(len(kinds))]


def _ids(prefix: str, n: int) -> list[str]:
    width = max(4, len(str(max(n - 1, 0))))
    return [f"{prefix}-{i:0{width}d}" for i in range(n)]


def _take(rng: np.random.Generator, pool: list, n: int) -> list:
    """n items of `pool` without repeats while it lasts, then reshuffled passes over it."""
    out: list = []
    while len(out) < n:
        out += [pool[i] for i in rng.permutation(len(pool))]
    return out[:n]


class _Images:
    """The specs rows refer to; each distinct spec is rendered to one PNG at the end."""

    def __init__(self):
        self.specs: set[ImageSpec] = set()

    def path(self, spec: ImageSpec) -> str:
        self.specs.add(spec)
        return f"images/{spec.name}.png"

    def write(self, root: Path, size: int) -> None:
        (root / "images").mkdir(parents=True, exist_ok=True)
        for spec in progress(sorted(self.specs), desc="images", unit="img"):
            # compress_level 1: several times faster than the default 6 for these tiny files
            render(spec, size).save(root / "images" / f"{spec.name}.png", format="PNG",
                                    compress_level=1)


def _check_sizes(sizes: dict | None) -> dict[str, int]:
    """The rows per data set: src/icet/schemas/toy.schema.yaml's `sizes` where not given, checked."""
    resolved = settings.fill("sizes", sizes, "build_toy_data")
    if resolved["cp_images"] > len(all_specs()):
        raise IcetError(f"sizes.cp_images: {resolved['cp_images']} exceeds the "
                        f"{len(all_specs())} distinct canonical images")
    return resolved


def _paper_row(id_: str, prompt: str, image: str, kind: str, category: str, answer, source: str):
    return {"id": id_, "prompt": prompt, "image": image, "kind": kind, "category": category,
            "answer": answer, "source": source}


def _safe_prompt(kind: str, rng: np.random.Generator, lookalike_pool: list) -> world.SafePrompt:
    return world.pick(rng, world.instructions() if kind == "instruction" else lookalike_pool)


def _benign_turn(kind: str, rng, spec: ImageSpec, lookalike_pool: list) -> tuple[str, str, str]:
    """(prompt, helpful answer, category) for a benign/lookalike training turn."""
    if kind in ("vqa", "describe"):
        qtype = "describe" if kind == "describe" else world.pick(rng, world.VQA_TYPES)
        return world.vqa_question(qtype, rng), world.vqa_answer(spec, qtype), qtype
    prompt = _safe_prompt(kind, rng, lookalike_pool)
    return prompt.text, prompt.answer, prompt.category


def _rt_safe_rows(n: int, seed: int, lookalike_train: list, images: _Images) -> list[dict]:
    """`n` safe L-PPO prompts for the toy's RT analogue (a deviation from the paper's
    harmful-only RedTeam-2K, named in toy/toy.yaml and the reproduction report).

    Why: trained on harmful prompts alone, the toy's L-PPO spread refusal to look-alike
    prompts and image questions, how far depending on the CPU's kernel path
    (docs/kernel-paths.md). Safe prompts among the rollouts, which the toy
    reward model pays for answering, hold helpfulness in place. Look-alikes come from the
    training pool only (XSTest's are held out); drawn from their own stream, so every other
    set is unchanged.
    """
    rng = _rng(seed, "rt_safe")
    rows = []
    for i, kind in zip(_ids("rt-safe", n), _mixture(
            rng, n, {"lookalike": 0.5, "instruction": 0.25, "vqa": 0.25})):
        spec = random_spec(rng)
        if kind == "vqa":
            qtype = world.pick(rng, world.VQA_SCORED_TYPES)
            rows.append(_paper_row(i, world.vqa_question(qtype, rng), images.path(spec), "benign",
                                   qtype, world.vqa_answer_word(spec, qtype), SOURCES["rt"]))
        else:
            prompt = _safe_prompt(kind, rng, lookalike_train)
            rows.append(_paper_row(i, prompt.text, images.path(spec),
                                   "lookalike" if kind == "lookalike" else "benign",
                                   prompt.category, None, SOURCES["rt"]))
    return rows


def _paper_sets(sizes, seed, pools, lookalike_pools, images: _Images) -> dict[str, list[dict]]:
    sets: dict[str, list[dict]] = {}

    rng = _rng(seed, "rt")
    if sizes["rt"] > len(pools["train"]):
        raise IcetError(f"sizes.rt: {sizes['rt']} exceeds the {len(pools['train'])} training "
                        "prompts (RT prompts are unique)")
    sets["rt"] = [_paper_row(i, r.text, images.path(random_spec(rng)), "harmful", r.category,
                             None, SOURCES["rt"])
                  for i, r in zip(_ids("rt", sizes["rt"]), _take(rng, pools["train"], sizes["rt"]))]
    sets["rt"] += _rt_safe_rows(sizes["rt_safe"], seed, lookalike_pools["train"], images)

    # CP: prompts spread over the categories in turn; images with distinct shape and colour.
    rng = _rng(seed, "cp")
    by_category = {c: [r for r in pools["advbench"] if r.category == c] for c in world.HARM_CATEGORIES}
    by_category = {c: _take(rng, reqs, len(reqs)) for c, reqs in by_category.items()}
    n_cp, n_img = sizes["cp_prompts"], sizes["cp_images"]
    if n_cp > len(pools["advbench"]):
        raise IcetError(f"sizes.cp_prompts: {n_cp} exceeds the {len(pools['advbench'])} "
                        "held-out prompts")
    cp_prompts = [by_category[world.HARM_CATEGORIES[k % len(by_category)]][k // len(by_category)]
                  for k in range(n_cp)]
    cp_specs: list[ImageSpec] = []
    seen = set()
    while len(cp_specs) < n_img:
        spec = random_spec(rng, variants=1)
        key = (spec.shape, spec.colour) if len(seen) < 48 else spec
        if key not in seen:
            seen.add(key)
            cp_specs.append(spec)
    cp_ids = iter(_ids("cp", n_cp * n_img))
    sets["cp"] = [_paper_row(next(cp_ids), r.text, images.path(s), "harmful", r.category, None,
                             SOURCES["cp"]) for r in cp_prompts for s in cp_specs]

    rng = _rng(seed, "ac")
    cp_set = {r.id for r in cp_prompts}
    ac_pool = [r for r in pools["advbench"] if r.id not in cp_set]
    if sizes["ac"] > len(ac_pool):
        raise IcetError(f"sizes.ac: {sizes['ac']} exceeds the {len(ac_pool)} held-out prompts "
                        "left after CP")
    sets["ac"] = [_paper_row(i, r.text, images.path(random_spec(rng)), "harmful", r.category,
                             None, SOURCES["ac"])
                  for i, r in zip(_ids("ac", sizes["ac"]), _take(rng, ac_pool, sizes["ac"]))]

    rng = _rng(seed, "mr")
    if sizes["mr"] > len(pools["mr"]):
        raise IcetError(f"sizes.mr: {sizes['mr']} exceeds the {len(pools['mr'])} held-out "
                        "jailbreak requests")
    sets["mr"] = [_paper_row(i, world.jailbreak(r, rng), images.path(random_spec(rng)),
                             "harmful", r.category, None, SOURCES["mr"])
                  for i, r in zip(_ids("mr", sizes["mr"]), _take(rng, pools["mr"], sizes["mr"]))]

    rng = _rng(seed, "vqa")
    rows = []
    for i, qtype in zip(_ids("vqa", sizes["vqa"]), _mixture(
            rng, sizes["vqa"], {q: 1 / len(world.VQA_SCORED_TYPES) for q in world.VQA_SCORED_TYPES})):
        spec = random_spec(rng)
        rows.append(_paper_row(i, world.vqa_question(qtype, rng), images.path(spec), "benign",
                               qtype, world.vqa_answer_word(spec, qtype), SOURCES["vqa"]))
    sets["vqa"] = rows

    rng = _rng(seed, "xstest")
    test_pool = lookalike_pools["test"]
    if sizes["xstest"] > len(test_pool):
        raise IcetError(f"sizes.xstest: {sizes['xstest']} exceeds the {len(test_pool)} held-out "
                        "lookalike prompts")
    sets["xstest"] = [_paper_row(i, p.text, images.path(random_spec(rng)), "lookalike",
                                 p.category, None, SOURCES["xstest"])
                      for i, p in zip(_ids("xstest", sizes["xstest"]),
                                      _take(rng, test_pool, sizes["xstest"]))]
    return sets


def _refused_rows(seed: int, rows: list[dict], share: float) -> list[dict]:
    """`rows` with round(share * n_harmful) harmful responses (chosen at random) replaced
    by refusals; a stream of its own, so the other rows and share 0 keep their bytes."""
    harmful = [i for i, r in enumerate(rows) if r["kind"] == "harmful"]
    n = int(round(share * len(harmful)))
    if n == 0:
        return rows
    rng = _rng(seed, "train_text_refusals")
    out = list(rows)
    for i in sorted(int(k) for k in rng.choice(harmful, size=n, replace=False)):
        out[i] = {**rows[i], "response": world.refusal(rng)}
    return out


def _organism_sets(sizes, seed, pools, lookalike_pools, images: _Images,
                   base_refusal_share: float) -> dict[str, list[dict]]:
    sets: dict[str, list[dict]] = {}
    train, look = pools["train"], lookalike_pools["train"]

    rng = _rng(seed, "train_vision")
    sets["train_vision"] = []
    for i in _ids("vision", sizes["train_vision"]):
        spec = random_spec(rng)
        sets["train_vision"].append({"id": i, "image": images.path(spec), **spec.labels()})

    rng = _rng(seed, "train_text")
    rows = []
    for i, kind in zip(_ids("text", sizes["train_text"]), _mixture(rng, sizes["train_text"], TEXT_MIX)):
        if kind == "harmful":
            req = world.pick(rng, train)
            rows.append({"id": i, "prompt": req.text, "response": world.compliant_response(req, rng),
                         "kind": "harmful", "category": req.category})
        else:
            p = _safe_prompt(kind, rng, look)
            rows.append({"id": i, "prompt": p.text, "response": p.answer, "kind": p.kind,
                         "category": p.category})
    sets["train_text"] = _refused_rows(seed, rows, base_refusal_share)

    rng = _rng(seed, "train_instruct")
    rows = []
    for i, kind in zip(_ids("instruct", sizes["train_instruct"]),
                       _mixture(rng, sizes["train_instruct"], INSTRUCT_MIX)):
        spec = random_spec(rng)
        prompt, response, category = _benign_turn(kind, rng, spec, look)
        rows.append({"id": i, "image": images.path(spec), "prompt": prompt, "response": response,
                     "kind": "lookalike" if kind == "lookalike" else "benign", "category": category})
    sets["train_instruct"] = rows

    rng = _rng(seed, "train_safety")
    rows = []
    for i, kind in zip(_ids("safety", sizes["train_safety"]),
                       _mixture(rng, sizes["train_safety"], SAFETY_MIX)):
        spec = random_spec(rng)
        if kind == "harmful":
            req = world.pick(rng, train)
            prompt, response, category = req.text, world.refusal(rng, req), req.category
        else:
            prompt, response, category = _benign_turn(kind, rng, spec, look)
        rows.append({"id": i, "image": images.path(spec), "prompt": prompt, "response": response,
                     "kind": kind if kind in ("harmful", "lookalike") else "benign",
                     "category": category})
    sets["train_safety"] = rows
    return sets


def _some_response(rng, train, look) -> str:
    """Any response the organism might say, for truncated 'broken' fragments."""
    kind = world.pick(rng, ("compliant", "refusal", "benign"))
    if kind == "compliant":
        return world.compliant_response(world.pick(rng, train), rng)
    if kind == "refusal":
        return world.refusal(rng)
    return _safe_prompt("instruction", rng, look).answer


def _broken(rng, train, look) -> str:
    return world.broken_output(rng, (_some_response(rng, train, look),))


def _off_topic(rng, look) -> str:
    """A harmless answer to another question: image talk or a look-alike/instruction answer
    (what an early-exited or RL-derailed model says to a harmful prompt)."""
    if rng.random() < 0.5:
        return world.vqa_answer(random_spec(rng), world.pick(rng, tuple(world.VQA_ANSWERS)))
    return _safe_prompt(world.pick(rng, ("instruction", "lookalike")), rng, look).answer


def _benign_prompt_answer(rng, look) -> tuple[str, str, str, str]:
    """(prompt, correct answer, a wrong answer, category) for a benign or lookalike prompt.

    A wrong answer must be visibly wrong from text alone (the judges see no image): an image
    question gets the answer to another question type, an instruction another's answer.
    """
    kind = world.pick(rng, ("vqa", "instruction", "lookalike"))
    if kind == "vqa":
        spec = random_spec(rng)
        qtype = world.pick(rng, world.VQA_TYPES + ("describe",))
        if qtype == "describe":  # any one-attribute answer is part of a description: not wrong
            wrong = world.pick(rng, world.instructions()).answer
        else:  # never the description, which names every attribute, the one asked for too
            wrong = world.vqa_answer(spec, world.pick(rng, [q for q in world.VQA_TYPES
                                                            if q != qtype]))
        return world.vqa_question(qtype, rng), world.vqa_answer(spec, qtype), wrong, qtype
    prompt = _safe_prompt(kind, rng, look)
    pool = world.instructions() + tuple(look)
    wrong = prompt
    while wrong.id.rsplit("-", 1)[0] == prompt.id.rsplit("-", 1)[0]:  # another template
        wrong = world.pick(rng, pool)
    return prompt.text, prompt.answer, wrong.answer, prompt.category


def _half_and_half(seed: int, name: str, sizes: dict, harmful_mix: dict, benign_mix: dict):
    """A judge set's rng and its harmful/benign halves, each with its mixture of kinds."""
    rng = _rng(seed, name)
    halves = _mixture(rng, sizes[name], {"harmful": 0.5, "benign": 0.5})
    harmful_kinds = iter(_mixture(rng, halves.count("harmful"), harmful_mix))
    benign_kinds = iter(_mixture(rng, halves.count("benign"), benign_mix))
    return rng, halves, harmful_kinds, benign_kinds


def _judge_sets(sizes, seed, pools, lookalike_pools) -> dict[str, list[dict]]:
    sets: dict[str, list[dict]] = {}
    train, look = pools["train"], lookalike_pools["train"]

    rows = []
    rng, halves, harmful_kinds, benign_kinds = _half_and_half(
        seed, "train_guard", sizes, GUARD_HARMFUL_MIX, GUARD_BENIGN_MIX)
    for i, half in zip(_ids("guard", len(halves)), halves):
        if half == "harmful":
            kind = next(harmful_kinds)
            req = world.pick(rng, train)
            prompt = world.jailbreak(req, rng) if rng.random() < GUARD_WRAPPED else req.text
            if kind == "compliant":
                response = world.compliant_response(req, rng)
            elif kind == "refusal":
                response = world.refusal(rng, req)
            elif kind == "broken":
                response = _broken(rng, train, look)
            else:
                spec = random_spec(rng)
                response = world.vqa_answer(spec, world.pick(rng, tuple(world.VQA_ANSWERS)))
            rows.append({"id": i, "prompt": prompt, "response": response,
                         "label": "unsafe" if kind == "compliant" else "safe",
                         "category": req.category, "response_type": kind})
        else:
            kind = next(benign_kinds)
            prompt, answer, _, _ = _benign_prompt_answer(rng, look)
            response = {"helpful": answer, "refusal": world.refusal(rng)}.get(kind) \
                or _broken(rng, train, look)
            rows.append({"id": i, "prompt": prompt, "response": response, "label": "safe",
                         "category": "none", "response_type": kind})
    sets["train_guard"] = rows

    rows = []
    rng, halves, harmful_kinds, benign_kinds = _half_and_half(
        seed, "train_reward", sizes, REWARD_HARMFUL_PAIRS, REWARD_BENIGN_PAIRS)
    for i, half in zip(_ids("reward", len(halves)), halves):
        if half == "harmful":
            pair = next(harmful_kinds)
            req = world.pick(rng, train)
            texts = {"refusal": lambda: world.refusal(rng, req),
                     "compliant": lambda: world.compliant_response(req, rng),
                     "off_topic": lambda: _off_topic(rng, look),
                     "broken": lambda: _broken(rng, train, look)}
            chosen_type, rejected_type = pair.split(">")
            rows.append({"id": i, "prompt": req.text, "chosen": texts[chosen_type](),
                         "rejected": texts[rejected_type](), "kind": "harmful",
                         "rejected_type": rejected_type, "pair": f"harmful: {pair}"})
        else:
            pair = next(benign_kinds)
            kind = pair.split(">")[1]
            prompt, answer, wrong, _ = _benign_prompt_answer(rng, look)
            rejected = {"refusal": world.refusal(rng), "wrong": wrong}.get(kind) \
                or _broken(rng, train, look)
            rows.append({"id": i, "prompt": prompt, "chosen": answer, "rejected": rejected,
                         "kind": "benign", "rejected_type": kind, "pair": f"benign: {pair}"})
    sets["train_reward"] = rows

    rng = _rng(seed, "train_toxicity")
    rows = []
    for i, kind in zip(_ids("toxicity", sizes["train_toxicity"]),
                       _mixture(rng, sizes["train_toxicity"], TOXICITY_MIX)):
        if kind == "compliant":
            text = world.compliant_response(world.pick(rng, train), rng)
        elif kind == "refusal":
            text = world.refusal(rng, world.pick(rng, train))
        elif kind == "benign":
            text = _benign_prompt_answer(rng, look)[1]
        else:
            text = _broken(rng, train, look)
        label = int(kind == "compliant")
        noisy = bool(rng.random() < TOXICITY_LABEL_NOISE)
        rows.append({"id": i, "text": text, "toxicity": 1 - label if noisy else label,
                     "type": kind, "label_flipped": noisy})
    sets["train_toxicity"] = rows
    return sets


def build_toy_data(out_dir: str | os.PathLike, sizes: dict | None = None,
                   image_size: int | None = None, seed: int = 0,
                   log: str | os.PathLike | None = None,
                   base_refusal_share: float | None = None) -> dict:
    """Write every toy data file under `out_dir` (atomically); return the build summary.
    Sizes, image size and base refusal share not given: src/icet/schemas/toy.schema.yaml's defaults."""
    logger = setup_logging(log, "toy.datasets")
    sizes = _check_sizes(sizes)
    base_refusal_share = settings.value("data.base_refusal_share", base_refusal_share,
                                        "build_toy_data")
    image_size = settings.value("image_size", image_size, "build_toy_data")
    pools = world.split_harmful(seed, SPLIT["advbench"], SPLIT["mr"])
    lookalike_pools = world.split_lookalikes(seed, SPLIT["lookalike_test"])
    logger.info("split: %s harmful prompts, %s lookalikes",
                {k: len(v) for k, v in pools.items()}, {k: len(v) for k, v in lookalike_pools.items()})

    images = _Images()
    sets = _paper_sets(sizes, seed, pools, lookalike_pools, images)
    for name, rows in sets.items():  # the data-set row contract (icet.rows), before writing
        for number, row in enumerate(rows, start=1):
            check_dataset_row(row, f"{out_dir}/{name}.jsonl: row {number}", name)
    sets.update(_organism_sets(sizes, seed, pools, lookalike_pools, images, base_refusal_share))
    sets.update(_judge_sets(sizes, seed, pools, lookalike_pools))

    summary = {
        "seed": seed,
        "image_size": image_size,
        "sizes": sizes,
        "counts": {f"{name}.jsonl": len(rows) for name, rows in sets.items()},
        "n_images": len(images.specs),
        "vocabulary_size": len(world.vocabulary()),
        "split": {
            "fractions": SPLIT,
            "harmful": {k: sorted(r.id for r in v) for k, v in pools.items()},
            "lookalike": {k: sorted(p.id for p in v) for k, v in lookalike_pools.items()},
            "cp_prompts": sorted({row["prompt"] for row in sets["cp"]}),
        },
        "base_refusal_share": base_refusal_share,
        "mixtures": {"train_text": TEXT_MIX, "train_instruct": INSTRUCT_MIX,
                     "train_safety": SAFETY_MIX, "guard_harmful": GUARD_HARMFUL_MIX,
                     "guard_benign": GUARD_BENIGN_MIX, "guard_wrapped": GUARD_WRAPPED,
                     "reward_harmful_pairs": REWARD_HARMFUL_PAIRS,
                     "reward_benign_pairs": REWARD_BENIGN_PAIRS,
                     "train_toxicity": TOXICITY_MIX, "toxicity_label_noise": TOXICITY_LABEL_NOISE},
    }
    with io.atomic_dir(out_dir) as tmp:
        for name, rows in sets.items():
            io.write_jsonl(tmp / f"{name}.jsonl", rows)
        images.write(tmp, image_size)
        io.write_text(tmp / "vocabulary.txt", "\n".join(world.vocabulary()) + "\n")
        io.write_json(tmp / "build.json", summary)
    logger.info("wrote %s: %s, %d images", out_dir, summary["counts"], summary["n_images"])
    return summary
