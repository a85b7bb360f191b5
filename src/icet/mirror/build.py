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
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from icet.datasets import registry
from icet.errors import IcetError
from icet.io import atomic_dir, sha256_file, write_json
from icet.mirror import data, hub, judges, models
from icet.mirror.server import mirror_path

MODEL_BUILDERS = {"llava": models.build_llava, "llava_next": models.build_llava_next,
                  "mllama": models.build_mllama}
# Repos gated on the Hub (accept the license, then HF_TOKEN): recorded, not enforced offline.
GATED_PREFIXES = ("meta-llama/",)


@dataclass(frozen=True)
class Site:
    """Where a data source's mirror stand-in (`Source.mirror(block, site)`, icet.datasets)
    writes: URL files under `http` at their URL's path (`url`), Hub repos through `repo`
    (repo_id, folder, repo_type, revision), what a user fetches by hand under `by_hand`."""

    http: Path
    scratch: Path
    by_hand: Path
    sizes: data.MirrorSizes
    seed: int
    repo: Callable[..., None]

    def url(self, url: str) -> Path:
        return mirror_path(url, self.http)


def _fingerprint(config: dict, sizes: data.MirrorSizes, seed: int) -> str:
    import icet.datasets as sources
    import icet.mirror as package

    folder = Path(package.__file__).parent  # the builders' code only (not the runner/checker)
    code = "".join((folder / f"{name}.py").read_text()
                   for name in ("build", "data", "hub", "judges", "models"))
    code += "".join(p.read_text() for p in sorted(Path(sources.__file__).parent.glob("*.py")))
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
    record: dict = {"fingerprint": fingerprint, "sizes": asdict(sizes), "repos": [], "urls": [],
                    "url_map": {}, "sha256": {}}
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
            checkpoint = scratch / Path(url).name
            judges.build_detoxify(checkpoint, scratch / "bert", words, seed)
            # Release files are named "<name>-<first hex of their sha256>.ckpt" (torch.hub's
            # convention, which the download checks): the mirror's own checkpoint is served
            # under the name its own hash gives, beside the real name's folder.
            served = mirror_path(url, http).parent / hashed_name(checkpoint)
            served.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(checkpoint, served)
            record["url_map"][url] = served.relative_to(http).as_posix()
            repo(tox["config_repo"], scratch / "bert", revision=tox.get("revision", "main"))

        harmbench = judge_cfg.get("harmbench") or {}
        if harmbench.get("source") == "hub":
            repo(harmbench["repo"], judges.build_harmbench(scratch / "harmbench"),
                 revision=harmbench.get("revision", "main"))

        raw = config.get("data", {})
        if config.get("data_source") == "paper":
            # Every data source the config has a block for, through its own stand-in, at the
            # config's URL paths (a pinned commit in a URL stays in its path) and repos.
            site = Site(http=http, scratch=scratch, by_hand=tmp, sizes=sizes, seed=seed,
                        repo=repo)
            for source in registry().values():
                if source.mirror is not None and isinstance(raw.get(source.name), dict):
                    info = source.mirror(raw[source.name], site)
                    if info:
                        record[source.name] = info
        for url in config_urls({k: config.get(k) for k in ("judges", "data")}):
            served = http / record["url_map"].get(url, mirror_path(url, http).relative_to(http).as_posix())
            if not served.is_file():
                raise IcetError(f"mirror: config URL {url} has no mirror file "
                                f"(the mirror serves {sorted(_served(http))})")
            record["urls"].append(url)
            record["sha256"][url] = sha256_file(served)
        write_json(tmp / "mirror.json", record)
    return record


def config_urls(config) -> list[str]:
    """Every URL value in a config (mappings at any depth), in order."""
    if isinstance(config, dict):
        return [u for v in config.values() for u in config_urls(v)]
    return [config] if isinstance(config, str) and config.startswith(("http://", "https://")) else []


def hashed_name(path: Path) -> str:
    """`name-<8 hex>.ext` with the hex replaced by the first 8 of the file's own sha256."""
    digest = sha256_file(path)[:8]
    stem, suffix = path.name.rsplit(".", 1)
    return f"{re.sub(r'-[0-9a-f]{8,64}$', '', stem)}-{digest}.{suffix}"


def _served(http: Path) -> list[str]:
    return [p.relative_to(http).as_posix() for p in http.rglob("*") if p.is_file()]
