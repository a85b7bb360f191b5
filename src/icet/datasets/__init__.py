"""The paper run's data sets as plug-ins: one module per source (docs/datasets.md).

    advbench    CP and AC (AdvBench prompts with safe / COCO images)
    jailbreakv  RT (RedTeam-2K, L-PPO's training set) and MR (the mini jailbreak split)
    vqa         VQA-v2 (utility)
    xstest      XSTest (over-refusal)
    safebench   FigStep's SafeBench (optional: typographic images carry the request)
    coco        COCO images, which several of the above draw from (no set of its own)

Each module registers a `Source` (icet.datasets.base): its downloads, its sets with their role,
row rules and table name, its builder and its rehearsal-mirror stand-in. The workflow's
download and build rules, the row check (icet.rows), the tables' set names and the mirror all
read the registry; icet.datasets.plan turns a config into the run's sets, paths and inputs.
"""

from icet.datasets.base import (DataSet, Download, Source, all_sets, build, data_set, downloads,
                                fetch, register, registry, source_of, titles)
from icet.datasets.files import build_choices, describe_build

__all__ = ["DataSet", "Download", "Source", "all_sets", "build", "build_choices", "data_set",
           "describe_build", "downloads", "fetch", "register", "registry", "source_of",
           "titles"]
