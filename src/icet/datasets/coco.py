"""COCO images: no test set of its own, the image pool of AdvBench-COCO and CP, VQA-v2, XSTest
and RT's fallback (config block `data.coco`).

images.cocodataset.org/zips/val2017.zip unpacks to `val2017/<12-digit id>.jpg` (5,000 images);
val2014.zip to `val2014/COCO_val2014_<12-digit id>.jpg` (40,504), the images VQA-v2's val
questions ask about (icet/mirror/README.md cites both layouts).
"""

from __future__ import annotations

import numpy as np

from icet.datasets.base import Download, Source, register

ZIPS = "images.cocodataset.org/zips"


def image_ids(sizes, seed: int = 0) -> tuple[list[int], list[int]]:
    """The mirror's val2014 and val2017 image ids: val2017 shares some ids with val2014, not
    all (VQA-v2's stand-in asks about the val2014 ones)."""
    rng = np.random.default_rng(seed + 7)
    v2014 = sorted(int(x) for x in rng.choice(np.arange(1, 580000), sizes.coco2014, replace=False))
    shared = v2014[: sizes.coco2017 // 2]
    others = [int(x) for x in rng.choice(np.arange(580000, 581000), sizes.coco2017 - len(shared),
                                         replace=False)]
    return v2014, sorted(shared + others)


def mirror(block: dict, site) -> dict:
    """Both zips at their real paths, whichever the config names."""
    from icet.mirror.data import image, to_jpeg, write_zip

    def members(folder: str, ids: list[int], prefix: str) -> dict:
        out = {}
        for image_id in ids:
            jpg = site.scratch / f"{prefix}{image_id:012d}.jpg"
            image(jpg.with_suffix(".png"), image_id)
            to_jpeg(jpg.with_suffix(".png"), jpg)
            out[f"{folder}/{jpg.name}"] = jpg
        return out

    v2014, v2017 = image_ids(site.sizes, site.seed)
    write_zip(site.http / ZIPS / "val2014.zip", members("val2014", v2014, "COCO_val2014_"))
    write_zip(site.http / ZIPS / "val2017.zip", members("val2017", v2017, ""))
    return {}


SOURCE = register(Source(
    name="coco",
    title="COCO",
    downloads=(Download("coco", "archive", block="coco"),),
    mirror=mirror,
))
