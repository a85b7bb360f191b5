"""The paper plan: the JailbreakV-28K build (which checks every image MR and RT need and names
the missing ones with how to get them) comes before any GPU job, and the COCO fallback for
RT's images brings in the COCO folder. A dry run of the paper config; nothing is fetched."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def test_every_sweep_waits_for_the_jailbreakv_image_check(tmp_path):
    overlay = tmp_path / "coco_fallback.yaml"
    overlay.write_text("data:\n  jailbreakv:\n    repo: JailbreakV-28K/JailBreakV-28k\n"
                       "    rt_images: coco\n    mr_missing_images: drop\n")
    result = subprocess.run(
        [SNAKEMAKE, "-n", "--profile", "slurm", "--directory", str(tmp_path / "run"),
         "--snakefile", str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config.yaml"),
         str(overlay)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "ICET_SLURM_PARTITION": "gpu"})
    assert result.returncode == 0, result.stdout + result.stderr
    blocks = {}
    for block in result.stdout.split("\nrule ")[1:]:
        blocks.setdefault(block.split(":")[0], []).append(block)
    gate = {"resources/paper/jailbreakv/mr.jsonl", "resources/paper/jailbreakv/rt.jsonl"}
    sweeps = blocks["sweep_shard"]
    assert sweeps
    for block in sweeps:  # also cp, ac, vqa and xstest sweeps, which read no JailbreakV data
        inputs = set(re.search(r"input: (.*)", block).group(1).split(", "))
        assert gate <= inputs, block.splitlines()[0:3]
    (build,) = blocks["build_jailbreakv"]
    assert set(re.search(r"input: (.*)", build).group(1).split(", ")) == {
        "resources/raw/jailbreakv", "resources/raw/coco"}
