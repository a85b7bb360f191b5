"""Build the whole mirror for a config: every model, judge and data set it names.

    python -m icet.mirror build <out> [config.yaml ...]

Layout of <out>: `hf/hub/` is a Hugging Face Hub cache (HF_HOME=<out>/hf), `http/<host>/<path>`
holds the URL downloads (served by icet.mirror.server), `mirror.json` records what was built.
Repos are named by the config (models[].repo, judges.*.repo / config_repo, data.*.repo), so
the rehearsal of a config reads exactly the repos a cluster run of it would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from icet.errors import IcetError
from icet.io import atomic_dir, write_json
from icet.mirror import data, hub, judges, models
from icet.mirror.server import mirror_path

MODEL_BUILDERS = {"llava": models.build_llava, "llava_next": models.build_llava_next,
                  "mllama": models.build_mllama}
# Repos gated on the Hub (accept the license, then HF_TOKEN): recorded, not enforced offline.
GATED_PREFIXES = ("meta-llama/",)


def _fingerprint(config: dict, sizes: data.MirrorSizes, seed: int) -> str:
    import icet.mirror as package

    folder = Path(package.__file__).parent  # the builders' code only (not the runner/checker)
    code = "".join((folder / f"{name}.py").read_text()
                   for name in ("build", "data", "hub", "judges", "models"))
    text = json.dumps({"config": config, "sizes": asdict(sizes), "seed": seed}, sort_keys=True,
                      default=str) + code
    return hashlib.sha256(text.encode()).hexdigest()


def build_mirror(out: str | os.PathLike, config: dict, sizes: data.MirrorSizes | None = None,
                 seed: int = 0) -> dict:
    """Write the mirror for `config` to `out` (atomically); reuse it if already built alike."""
    sizes = sizes or data.MirrorSizes()
    out = Path(out)
    fingerprint = _fingerprint({k: config.get(k) for k in ("models", "judges", "data")}, sizes, seed)
    record_path = out / "mirror.json"
    if record_path.is_file() and json.loads(record_path.read_text()).get("fingerprint") == fingerprint:
        return json.loads(record_path.read_text())
    if out.exists():
        shutil.rmtree(out)
    words = data.vocabulary()
    record: dict = {"fingerprint": fingerprint, "sizes": asdict(sizes), "repos": [], "urls": []}
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        cache, http = tmp / "hf" / "hub", tmp / "http"

        def repo(repo_id: str, folder: Path, repo_type: str = "model", revision: str = "main"):
            commit = hub.write_folder(cache, repo_id, folder, repo_type=repo_type, revision=revision)
            record["repos"].append({"repo": repo_id, "type": repo_type, "revision": revision,
                                    "commit": commit, "gated": repo_id.startswith(GATED_PREFIXES)})

        for i, spec in enumerate(config.get("models", [])):
            if spec.get("source") != "hub":
                continue
            builder = MODEL_BUILDERS.get(spec.get("architecture"))
            if builder is None:
                raise IcetError(f"mirror: no tiny builder for architecture {spec.get('architecture')!r}")
            folder = builder(scratch / f"model{i}", words, seed + i)
            repo(spec["repo"], folder, revision=spec.get("revision", "main"))

        judge_cfg = config.get("judges", {})
        guard = judge_cfg.get("guard", {})
        if guard.get("source") == "hub":
            repo(guard["repo"], judges.build_guard(scratch / "guard"), revision=guard.get("revision", "main"))
        reward = judge_cfg.get("reward", {})
        if reward.get("source") == "hub":
            repo(reward["repo"], judges.build_gpt2_reward(scratch / "reward", seed),
                 revision=reward.get("revision", "main"))
        utility = judge_cfg.get("utility_reward", {})
        if utility.get("source") == "hub":
            judges.build_deberta_reward(scratch / "ur-main", scratch / "ur-pr3", words, seed)
            repo(utility["repo"], scratch / "ur-main", revision="main")
            repo(utility["repo"], scratch / "ur-pr3", revision="refs/pr/3")
        tox = judge_cfg.get("toxicity", {})
        if tox.get("source") == "hub":
            url = tox["checkpoint_url"]
            judges.build_detoxify(mirror_path(url, http), scratch / "bert", words, seed)
            record["urls"].append(url)
            repo(tox["config_repo"], scratch / "bert", revision=tox.get("revision", "main"))

        raw = config.get("data", {})
        if config.get("data_source") == "paper":
            advbench = data.build_advbench(http, sizes, seed)
            record["urls"].append(raw["advbench"]["url"])
            assert advbench == mirror_path(raw["advbench"]["url"], http), "AdvBench URL layout"
            coco = data.build_coco(http, scratch / "coco", sizes, seed)
            data.build_vqa(http, sizes, coco["val2014"], seed)
            record["urls"] += [raw["coco"]["url"], raw["vqa"]["questions_url"],
                               raw["vqa"]["annotations_url"]]
            for url in record["urls"]:
                if not mirror_path(url, http).is_file():
                    raise IcetError(f"mirror: config URL {url} has no mirror file "
                                    f"(the mirror serves {sorted(_served(http))})")
            record["jailbreakv"] = data.build_jailbreakv(scratch / "jbv", sizes, seed)
            repo(raw["jailbreakv"]["repo"], scratch / "jbv", "dataset", raw["jailbreakv"].get("revision", "main"))
            data.build_xstest(scratch / "xstest", sizes, seed)
            repo(raw["xstest"]["repo"], scratch / "xstest", "dataset", raw["xstest"].get("revision", "main"))
        write_json(tmp / "mirror.json", record)
    return record


def _served(http: Path) -> list[str]:
    return [p.relative_to(http).as_posix() for p in http.rglob("*") if p.is_file()]
