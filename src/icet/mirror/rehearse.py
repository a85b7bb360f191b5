"""Run the paper DAG against the mirror: `make rehearsal` / `python -m icet.mirror rehearse`.

    python -m icet.mirror rehearse --workdir . [--configfile rehearsal/rehearsal.yaml] [target ...]

Builds the mirror for the merged config (config.yaml + the overlays) under
<resources_dir>/mirror, starts the local HTTP server, writes an overlay that points every
URL of the config at it (same host/path, so the same file names), and runs Snakemake with
HF_HOME at the mirror's Hub cache and HF_HUB_OFFLINE=1 (and points data.jailbreakv.images_dir, where the config has it, at the
mirror's copy of the authors' image set): the real download code reads the
mirror exactly as it would read a filled cache on a login node. The machine's own Hub cache
(~/.cache/huggingface) is never read or written; HF_TOKEN is not passed on. Then
`icet verify` checks the run against its manifest. The server stops when the run ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from icet.config import load_yaml, merge
from icet.datasets.jailbreakv import AUTHORS_IMAGES
from icet.mirror.build import build_mirror
from icet.mirror.server import local_url, serve, stable_port

ROOT = Path(__file__).resolve().parents[3]
OVERLAY = ROOT / "rehearsal" / "rehearsal.yaml"


def url_overlay(config: dict, base: str, record: dict | None = None) -> dict:
    """The config's URL values (any mapping depth), rewritten to the local server.

    With the mirror's `record`: a URL the mirror serves under another name (`url_map`) gets
    that name, and a checksum key beside a URL (`url` -> `sha256`, `<x>_url` ->
    `<x>_sha256`), if the config pins one, gets the mirror file's sha256: the download still
    checks it, against the mirror's bytes instead of the real ones (an unpinned null stays
    null, so the run warns about it as a cluster run would).
    """
    record = record or {}
    out: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            sub = url_overlay(value, base, record)
            if sub:
                out[key] = sub
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            mapped = record.get("url_map", {}).get(value)
            out[key] = f"{base}/{mapped}" if mapped else local_url(value, base)
            checksum = key[: -len("url")] + "sha256"
            if config.get(checksum) is not None and value in record.get("sha256", {}):
                out[checksum] = record["sha256"][value]
    return out


def by_hand_overlay(config: dict, mirror: Path) -> dict:
    """What a cluster user fetches by hand, from the mirror: JailbreakV-28K's full image set
    (where the config has the key for it, data.jailbreakv.images_dir, and leaves it unset)."""
    jbv = config.get("data", {}).get("jailbreakv", {})
    if "images_dir" in jbv and jbv["images_dir"] is None:
        return {"data": {"jailbreakv": {"images_dir": str(mirror / AUTHORS_IMAGES)}}}
    return {}


def rehearsal_env(mirror: Path) -> dict:
    """The environment of the rehearsal's jobs: the mirror's Hub cache, offline, no token."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_DISABLE_OFFLINE")}
    env.update(HF_HOME=str(mirror / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               ICET_NO_PROGRESS="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def rehearse(workdir: str | os.PathLike = ".", configfiles: list[str | os.PathLike] | None = None,
             targets: list[str] = (), cores: int = 2, verify: bool = True,
             snakemake_args: list[str] = (), timeout: float | None = None,
             profile: str | os.PathLike | None = None, env: dict | None = None) -> int:
    """Build/serve the mirror, run the DAG (and `icet verify`); the exit status of the first failure.

    `profile` (default: rehearsal/) is the Snakemake profile, e.g. a slurm one, so the paper
    config path is rehearsed through sbatch (tests/workflow/test_slurm.py); `env` is added to the
    jobs' environment (a test cluster's SLURM_CONF and PATH)."""
    workdir = Path(workdir).resolve()
    # The profile's rehearsal.yaml stays under a user's files, as the Snakefile keeps a
    # profile's config files (icet.command_line): the mirror is built from the same config.
    overlays = list(dict.fromkeys([OVERLAY.resolve()] + [Path(p).resolve() for p in configfiles or []]))
    config = load_yaml(ROOT / "config.yaml")
    for path in overlays:
        config = merge(config, load_yaml(path))
    resources = Path(config["resources_dir"])
    mirror = (resources if resources.is_absolute() else workdir / resources) / "mirror"
    print(f"rehearsal: building the mirror in {mirror}", flush=True)
    record = build_mirror(mirror, config)
    print(f"rehearsal: mirror holds {len(record['repos'])} repo refs and {len(record['urls'])} URLs",
          flush=True)
    snakemake = str(Path(sys.executable).parent / "snakemake")
    with serve(mirror / "http", stable_port(str(workdir))) as base:
        urls = workdir / f".rehearsal-urls-{config['run']}.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        urls.write_text("# Written by icet.mirror.rehearse: the config's URLs on the local mirror.\n"
                        + yaml.safe_dump(merge(url_overlay(config, base, record),
                                              by_hand_overlay(config, mirror)), sort_keys=True))
        command = [snakemake, "--profile", str(profile or ROOT / "rehearsal"), "--snakefile",
                   str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", str(cores),
                   "--configfile", *map(str, overlays), str(urls), *snakemake_args, *targets]
        print("rehearsal: " + " ".join(command), flush=True)
        done = subprocess.run(command, cwd=ROOT, env={**rehearsal_env(mirror), **(env or {})},
                              timeout=timeout)
    if done.returncode != 0 or not verify or targets:
        return done.returncode
    run_dir = workdir / "results" / config["run"]
    return subprocess.run([sys.executable, "-m", "icet", "verify", str(run_dir)], cwd=ROOT,
                          env=rehearsal_env(mirror), timeout=timeout).returncode
