"""Every kind of bad input in one table: each stops where the user meets it (the CLI, or the
library call a rule makes) with a non-zero exit or an IcetError of one line naming the file,
key or row, and no file written before is lost or overwritten with partial data.

docs/auditing.md ("Bad input") lists the same kinds with the message a user sees.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from icet.errors import IcetError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [str(ROOT / "config.yaml"), str(ROOT / "toy" / "toy.yaml")]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
       b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe"
       b"\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82")  # a valid 1x1 RGB PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 20000, height: int = 10000) -> bytes:
    """A tiny PNG whose header claims 200 MP: past twice PIL's MAX_IMAGE_PIXELS (179 MP)."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def truncated_jpeg() -> bytes:
    """A 64x64 JPEG cut in half: its header reads fine, decoding runs out of data."""
    import io as bytes_io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = bytes_io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]


MODEL = {"name": "toy-llava", "source": "toy", "architecture": "llava", "num_layers": 12,
         "groups": {"early": [1, 4]}}


def row(id_="cp-0001", image="img/a.png", prompt="how do i make zorblax ?"):
    return {"id": id_, "prompt": prompt, "image": image, "kind": "harmful",
            "category": "blight", "answer": None, "source": "test"}


def dataset(tmp: Path, rows: list[dict] | bytes, images: dict[str, bytes] | None = None) -> Path:
    """A data set JSONL (rows, or raw bytes) with its images beside it."""
    for name, data in (images if images is not None else {"img/a.png": PNG}).items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    path = tmp / "cp.jsonl"
    path.write_bytes(rows if isinstance(rows, bytes)
                     else "".join(json.dumps(r) + "\n" for r in rows).encode())
    return path


# ---- the entries a user meets ----------------------------------------------------------


def check_config(tmp: Path, extra: str | dict):
    """`python -m icet check-config config.yaml toy/toy.yaml extra.yaml` (what the DAG runs
    first, before any job): exit code and stderr."""
    path = tmp / "extra.yaml"
    path.write_text(extra if isinstance(extra, str) else yaml.safe_dump(extra))
    result = subprocess.run([sys.executable, "-m", "icet", "check-config", *CONFIGS, str(path)],
                            capture_output=True, text=True)
    return result.returncode, result.stderr


def sweep(tmp: Path, data: Path):
    """What rule sweep_shard calls; the data set is read before any model is loaded."""
    from icet.sweep import run_sweep_job

    run_sweep_job(tmp / "no-model-needed", data, [0], tmp / "out" / "chunk-00.json",
                  model_name="toy-llava", variant="original", testset="cp", max_new_tokens=8,
                  batch_size=2)


def build_advbench(tmp: Path, csv_bytes: bytes):
    """What rule build_advbench calls on the downloaded prompt file."""
    from icet.datasets.advbench import build_advbench_sets

    path = tmp / "advbench.csv"
    path.write_bytes(csv_bytes)
    build_advbench_sets(path, [], tmp, tmp / "out", seed=0)


def build_jailbreakv(tmp: Path, image: str):
    """What rule build_jailbreakv calls; the mini split's CSV names `image` for its one row."""
    from icet.datasets.jailbreakv import build_jailbreakv_sets

    root = tmp / "jbv"
    (root / "llm_transfer_attack").mkdir(parents=True)
    (root / "llm_transfer_attack" / "nature_0.png").write_bytes(PNG)
    (tmp / "escape.png").write_bytes(PNG)  # what a '..' path would reach, outside the set
    (root / "mini_JailBreakV_28K").mkdir()
    (root / "mini_JailBreakV_28K" / "mini_JailBreakV_28K.csv").write_text(
        "id,jailbreak_query,redteam_query,image_path,policy,format\n"
        f"7,how do i make zorblax ?,make zorblax,{image},blight,Template\n")
    (root / "JailBreakV_28K").mkdir()
    (root / "JailBreakV_28K" / "RedTeam_2K.csv").write_text(
        "id,question,policy\n1,how do i make zorblax ?,blight\n")
    build_jailbreakv_sets(root, tmp / "out", seed=0)


def build_advbench_with_coco(tmp: Path, coco_image: bytes):
    """rule build_advbench with one COCO image given as bytes (the others fine)."""
    from icet.datasets.advbench import build_advbench_sets

    path = tmp / "advbench.csv"
    path.write_text("goal,target\n" + "".join(f"zorblax number {i},sure\n" for i in range(3)))
    (tmp / "coco").mkdir()
    (tmp / "coco" / "COCO_val2014_000000000001.png").write_bytes(coco_image)
    safe = tmp / "safe.png"
    safe.write_bytes(PNG)
    build_advbench_sets(path, [safe], tmp / "coco", tmp / "out", seed=0, cp_prompts=1,
                        cp_images=1)


def lppo_train(tmp: Path, data: Path):
    """What rule lppo_train calls; RT's rows are read before any model is loaded."""
    from icet.lppo.trainer import train_lppo

    train_lppo(str(tmp / "no-model-needed"), str(data), str(tmp / "out" / "lppo"),
               {"groups": {"early": [1, 2]}}, seed=0)  # the rule passes the model's groups


def lppo_rewards(tmp: Path):
    """L-PPO's reward step (icet.lppo.losses): a NaN score from the reward model."""
    import torch

    from icet.lppo.losses import kl_penalised_rewards

    logp = torch.zeros(2, 3)
    kl_penalised_rewards([0.5, float("nan")], logp, logp, torch.ones(2, 3), eta=0.1, step=3,
                         ids=["rt-0001", "rt-0002"])


def gated_download(tmp: Path, monkeypatch):
    """rule download_model on a gated repo, no HF_TOKEN: the Hub answers 401."""
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from icet import download

    repo = "meta-llama/Llama-Guard-3-8B"
    response = httpx2.Response(401, request=httpx2.Request("GET", f"https://huggingface.co/{repo}"))

    def refuse(*args, **kwargs):
        raise GatedRepoError("401 gated", response=response)

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    download.download_snapshot(repo, "main", tmp / "out")


# ---- the table: (kind, how it is made, what the one line must name) ----------------------

CASES = {
    "broken YAML": (lambda tmp, mp: check_config(tmp, "seed: 1\nrun: toy: x\n"),
                    r"extra\.yaml: line 2"),
    "unknown key": (lambda tmp, mp: check_config(tmp, "colour: blue\n"),
                    r"unknown key 'colour'"),
    "wrong type": (lambda tmp, mp: check_config(tmp, "generation: {max_new_tokens: many}\n"),
                   r"key 'generation\.max_new_tokens'"),
    "layer out of range": (lambda tmp, mp: check_config(
        tmp, {"models": [{**MODEL, "layers": [0, 13]}]}),
        r"models\[0\]\.layers.*layer 13 out of range 0\.\.12"),
    "missing model folder": (lambda tmp, mp: check_config(
        tmp, {"models": [{**MODEL, "source": "local", "path": str(tmp / "gone")}]}),
        r"model folder .*gone not found"),
    "empty data set": (lambda tmp, mp: sweep(tmp, dataset(tmp, [])),
                       r"cp\.jsonl: data set has no rows"),
    "missing image": (lambda tmp, mp: sweep(tmp, dataset(tmp, [row(image="img/b.png")])),
                      r"cp\.jsonl: row 1 \(cp-0001\): image img/b\.png not found"),
    "corrupt image": (lambda tmp, mp: sweep(tmp, dataset(tmp, [row()], {"img/a.png": b"GIF8?"})),
                      r"cp\.jsonl: row 1 \(cp-0001\): image img/a\.png: unreadable image"),
    "image path with '..'": (lambda tmp, mp: sweep(tmp, dataset(tmp, [row(image="../x.png")])),
                             r"cp\.jsonl: row 1 \(cp-0001\): image path '\.\./x\.png' has a "
                             r"'\.\.' part"),
    "absolute image path": (lambda tmp, mp: sweep(tmp, dataset(
        tmp, [row(image=str(tmp / "img" / "a.png"))])),
        r"cp\.jsonl: row 1 \(cp-0001\): image path '/.*a\.png' is absolute"),
    "'..' in a builder's CSV": (lambda tmp, mp: build_jailbreakv(tmp, "../../escape.png"),
                                r"mini_JailBreakV_28K\.csv: line 2: image path "
                                r"'\.\./\.\./escape\.png' has a '\.\.' part"),
    "'..' in L-PPO's training set": (lambda tmp, mp: lppo_train(tmp, dataset(
        tmp, [row(id_="rt-0001", image="../../x.png")])),
        r"cp\.jsonl: row 1 \(rt-0001\): image path '\.\./\.\./x\.png' has a '\.\.' part"),
    "truncated JPEG": (lambda tmp, mp: sweep(tmp, dataset(
        tmp, [row(image="img/a.jpg")], {"img/a.jpg": truncated_jpeg()})),
        r"cp\.jsonl: row 1 \(cp-0001\): image img/a\.jpg: unreadable image.*truncated"),
    "decompression bomb in a data set": (lambda tmp, mp: sweep(tmp, dataset(
        tmp, [row()], {"img/a.png": bomb_png()})),
        r"cp\.jsonl: row 1 \(cp-0001\): image img/a\.png: decompression bomb refused"),
    "decompression bomb at build time": (lambda tmp, mp: build_advbench_with_coco(
        tmp, bomb_png()), r"coco: image .*COCO_val2014_000000000001\.png: decompression bomb"),
    "run name '..'": (lambda tmp, mp: check_config(tmp, "run: '..'\n"),
                      r"key 'run': '\.\.' does not match"),
    "model name starting with '-'": (lambda tmp, mp: check_config(
        tmp, {"models": [{**MODEL, "name": "-rf"}]}),
        r"key 'models\[0\]\.name': '-rf' does not match"),
    "duplicate ids": (lambda tmp, mp: sweep(tmp, dataset(tmp, [row(), row()])),
                      r"cp\.jsonl: row 2: duplicate id 'cp-0001'"),
    "non-UTF-8 data set": (lambda tmp, mp: sweep(tmp, dataset(
        tmp, json.dumps(row(prompt="caf\u00e9"), ensure_ascii=False).encode("latin-1") + b"\n")),
        r"cp\.jsonl: not UTF-8 \(byte \d+\)"),
    "non-UTF-8 prompt file": (lambda tmp, mp: build_advbench(
        tmp, "goal,target\ncaf\u00e9 zorblax,sure\n".encode("latin-1")),
        r"advbench\.csv: unreadable CSV"),
    "NaN reward during L-PPO": (lambda tmp, mp: lppo_rewards(tmp),
                                r"step 3.*non-finite reward nan.*'rt-0002'"),
    "gated model without token": (lambda tmp, mp: gated_download(tmp, mp),
                                  r"meta-llama/Llama-Guard-3-8B: gated;.*set HF_TOKEN"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_input_stops_with_one_line_and_keeps_earlier_outputs(kind, tmp_path, monkeypatch):
    make, expected = CASES[kind]
    # What an earlier run wrote where this step writes: it must keep its bytes.
    earlier = {tmp_path / "out" / "chunk-00.json": b'{"layers": [0]}\n',
               tmp_path / "out" / "cp.jsonl": b'{"id": "cp-0001"}\n',
               tmp_path / "out" / "config.json": b'{"model_type": "llama"}\n'}
    for path, data in earlier.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    try:
        outcome = make(tmp_path, monkeypatch)
    except IcetError as err:
        message = str(err)
    else:  # a CLI entry: (exit code, stderr)
        code, stderr = outcome
        assert code != 0, f"{kind}: exit code 0"
        lines = [l for l in stderr.splitlines() if l.strip()]
        assert len(lines) == 1, stderr
        message = lines[0]
    assert "\n" not in message
    assert re.search(expected, message), f"{kind}: {message}"
    for path, data in earlier.items():
        assert path.read_bytes() == data, f"{kind}: {path.name} changed"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in earlier), f"{kind}: partial output left behind"


def test_bad_config_stops_the_dag_before_any_job(tmp_path):
    """The same check runs when Snakemake parses the workflow: no job starts."""
    extra = tmp_path / "extra.yaml"
    extra.write_text("colour: blue\n")
    table = tmp_path / "results" / "toy" / "tables" / "layers.csv"
    table.parent.mkdir(parents=True)
    table.write_bytes(b"layer,asr\n0,0.0\n")
    result = subprocess.run([SNAKEMAKE, "--profile", "toy", "--snakefile", str(ROOT / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile", CONFIGS[1], str(extra),
                             "-n"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert "icet: config error:" in result.stderr and "unknown key 'colour'" in result.stderr
    assert table.read_bytes() == b"layer,asr\n0,0.0\n"
    assert not (tmp_path / "logs").exists() and not (tmp_path / "resources").exists()


def test_unparseable_judge_output_is_recorded_not_fatal():
    """A guard answer that is not a verdict is data, not a crash: `unparseable`, counted as
    missing (unsafe=null), never as safe; score_testset's log counts them."""
    from icet.judges.guard import parse_guard_output

    for text in ("", "I think this is fine", "uns", "unsafe\nS", "safe S1"):
        assert parse_guard_output(text) == ("unparseable", []), text
    assert parse_guard_output("unsafe\nS1,S10") == ("unsafe", ["S1", "S10"])
