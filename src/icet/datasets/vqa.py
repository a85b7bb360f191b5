"""VQA-v2 (Goyal et al. 2017): the utility set, a seeded subset of val questions with all ten
human answers (config block `data.vqa`; the images are COCO's, block `data.coco`).

VQA-v2 (https://visualqa.org/download.html; the same names in public loaders, e.g. the VQA-v2
dataset classes that open `v2_OpenEnded_mscoco_val2014_questions.json` and
`v2_mscoco_val2014_annotations.json`): the two zips hold exactly these two files.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from icet.datasets.base import DataSet, Download, Source, register
from icet.datasets.files import find_one, input_hashes, list_images, row, write_sets
from icet.errors import IcetError
from icet.io import read_json
from icet.logs import setup_logging
from icet.seeding import generator

# The file names the zips really hold, most specific first, matched case-insensitively.
VQA_QUESTIONS = ("v2_OpenEnded_mscoco_val2014_questions.json", "*questions*.json")
VQA_ANNOTATIONS = ("v2_mscoco_val2014_annotations.json", "*annotations*.json")

_IMAGE_ID = re.compile(r"(\d+)$")


def majority_answer(answers: Sequence[str]) -> str:
    """The most common human answer (lower-cased, spaces collapsed); ties go to the first given."""
    normal = [" ".join(a.lower().split()) for a in answers if a and a.strip()]
    if not normal:
        raise ValueError("no answers")
    return Counter(normal).most_common(1)[0][0]  # Counter keeps first-seen order among ties


def build_vqa_set(
    questions_json: str | os.PathLike,
    annotations_json: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    size: int,
    seed: int,
    log: str | os.PathLike | None = None,
) -> dict:
    """A seeded `size`-question subset of VQA-v2 val; answer = the majority human answer,
    answers = all human answers as the annotation gives them (for the VQA-v2 accuracy).

    VQA-v2 val asks about COCO val2014 images (`COCO_val2014_000000xxxxxx.jpg`, 40,504 of
    them, a 6 GB zip). We draw only among questions whose image is in `images_dir`: the
    config's COCO folder (val2017, 5,000 images with the same COCO ids, as COCO 2017 re-split
    the same images), so no second image download is needed; point data.coco.url at
    val2014.zip to draw from every question. The pool sizes go into build.json (and from
    there into the manifest). Writes out_dir/{vqa.jsonl, build.json, images/}.
    """
    logger = setup_logging(log, "datasets")
    q_path, a_path = Path(questions_json), Path(annotations_json)
    questions = read_json(q_path)
    annotations = read_json(a_path)
    if not isinstance(questions, dict) or "questions" not in questions:
        raise IcetError(f"{q_path}: missing key 'questions'")
    if not isinstance(annotations, dict) or "annotations" not in annotations:
        raise IcetError(f"{a_path}: missing key 'annotations'")
    every = sorted(questions["questions"], key=lambda q: q.get("question_id", -1))
    if size > len(every):
        raise IcetError(f"{q_path}: {len(every)} questions, fewer than size={size}")
    by_qid = {}
    for n, a in enumerate(annotations["annotations"], start=1):
        if "question_id" not in a or not a.get("answers"):
            raise IcetError(f"{a_path}: annotation {n}: missing question_id or answers")
        by_qid[a["question_id"]] = a
    images = {}
    for p in list_images(Path(images_dir)):
        m = _IMAGE_ID.search(p.stem)  # COCO_val2014_000000123456.jpg -> 123456
        if m:
            images.setdefault(int(m.group(1)), p)

    for n, q in enumerate(every, start=1):
        if "image_id" not in q:
            raise IcetError(f"{q_path}: question {n} (question_id {q.get('question_id', '?')}): "
                            f"missing key 'image_id'")
    qs = [q for q in every if int(q["image_id"]) in images]
    if size > len(qs):
        raise IcetError(f"{q_path}: only {len(qs)} of {len(every)} questions have their image in "
                        f"{images_dir} ({len(images)} images), fewer than size={size}; use COCO "
                        f"val2014 (data.coco.url: http://images.cocodataset.org/zips/val2014.zip)")
    rng = generator(seed)
    chosen = sorted(int(i) for i in rng.choice(len(qs), size=size, replace=False))
    rows = []
    for i in chosen:
        q = qs[i]
        where = f"{q_path}: question_id {q.get('question_id', '?')}"
        for key in ("question_id", "image_id", "question"):
            if key not in q:
                raise IcetError(f"{where}: missing key {key!r}")
        qid = q["question_id"]
        ann = by_qid.get(qid)
        if ann is None:
            raise IcetError(f"{a_path}: no annotation for question_id {qid}")
        image = images.get(int(q["image_id"]))
        if image is None:
            raise IcetError(f"{where}: image_id {q['image_id']} not in {images_dir}")
        humans = [a.get("answer", "") for a in ann["answers"]]
        answer = majority_answer(humans)
        rows.append(row(f"vqa-{qid}", q["question"].strip(), "benign",
                         ann.get("question_type") or "vqa", "vqa-v2-val", image, "coco",
                         image.name, where, answer=answer))
        # all 10 human answers, as given: the VQA-v2 accuracy (icet.judges.vqa) needs them
        rows[-1]["answers"] = humans
    build = {
        "builder": "vqa",
        "seed": seed,
        "params": {"size": size},
        "inputs": input_hashes(questions_json=q_path, annotations_json=a_path),
        "question_ids": [qs[i]["question_id"] for i in chosen],
        "images_dir": str(images_dir),
        # Questions are drawn only where their COCO image is present.
        "question_pool": {"rule": "image present in images_dir", "questions": len(every),
                          "with_image": len(qs), "images": len(images)},
    }
    return write_sets(out_dir, {"vqa.jsonl": rows}, build, logger)


def build(inputs: dict[str, Path], out_dir, *, seed: int, log=None, size: int) -> dict:
    """Rule build_vqa: the two unpacked zips and the COCO folder."""
    return build_vqa_set(find_one(inputs["questions"], *VQA_QUESTIONS),
                         find_one(inputs["annotations"], *VQA_ANNOTATIONS),
                         inputs["images"], out_dir, size, seed, log=log)


def describe(build: dict) -> list[str]:
    """The question pool the subset was drawn from, for the reproduction report."""
    if "question_pool" not in build:
        return []
    pool = build["question_pool"]
    return [f"VQA-v2: {build['params']['size']} questions drawn among the "
            f"{pool['with_image']} of {pool['questions']} whose COCO image is present "
            f"({pool['images']} images in {build['images_dir']})"]


def mirror(block: dict, site) -> dict:
    """s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_{Questions,Annotations}_Val_mscoco.zip holding
    v2_OpenEnded_mscoco_val2014_questions.json and v2_mscoco_val2014_annotations.json, asking
    about the mirror's COCO val2014 images."""
    import json

    import numpy as np

    from icet.datasets.coco import image_ids
    from icet.mirror.data import write_zip

    ids = image_ids(site.sizes, site.seed)[0]
    rng = np.random.default_rng(site.seed + 11)
    info = {"description": "This is v2.0 of the VQA dataset.", "url": "http://visualqa.org",
            "version": "2.0", "year": 2017, "contributor": "VQA Team",
            "date_created": "2017-04-26 17:07:13"}
    licence = {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0 International License"}
    questions, annotations = [], []
    for n in range(site.sizes.vqa_questions):
        image_id = ids[n % len(ids)]
        qid = image_id * 1000 + n
        colour = str(rng.choice(["red", "blue", "two"]))
        questions.append({"image_id": image_id, "question": "what colour is the florb ?",
                          "question_id": qid})
        answers = [{"answer": colour if k < 7 else "blue", "answer_confidence": "yes",
                    "answer_id": k + 1} for k in range(10)]
        annotations.append({"question_type": "what color is the", "multiple_choice_answer": colour,
                            "answers": answers, "image_id": image_id, "answer_type": "other",
                            "question_id": qid})
    q = {"info": info, "task_type": "Open-Ended", "data_type": "mscoco", "license": licence,
         "data_subtype": "val2014", "questions": questions}
    a = {"info": info, "license": licence, "data_subtype": "val2014", "annotations": annotations,
         "data_type": "mscoco"}
    write_zip(site.url(block["questions_url"]),
              {"v2_OpenEnded_mscoco_val2014_questions.json": json.dumps(q).encode()})
    write_zip(site.url(block["annotations_url"]),
              {"v2_mscoco_val2014_annotations.json": json.dumps(a).encode()})
    return {}


SOURCE = register(Source(
    name="vqa",
    title="VQA-v2",
    downloads=(Download("vqa_questions", "archive", block="vqa", prefix="questions_"),
               Download("vqa_annotations", "archive", block="vqa", prefix="annotations_")),
    # Benign image questions with a reference answer: utility is scored against it.
    sets=(DataSet("vqa", "utility", "VQA-v2", kinds=("benign",), answer_required=True),),
    inputs=lambda data: {"questions": "vqa_questions", "annotations": "vqa_annotations",
                         "images": "coco"},
    settings=lambda config: {"size": config["data"]["sizes"]["vqa"]},
    build=build,
    describe=describe,
    mirror=mirror,
))
