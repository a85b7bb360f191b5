"""The utility reward model (OpenAssistant/reward-model-deberta-v3-large-v2) as the paper run
gets it: weights from its safetensors PR ref, and (question, answer) as a text pair, the way
its model card calls it (huggingface.co/OpenAssistant/reward-model-deberta-v3-large-v2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


import huggingface_hub  # noqa: E402
from huggingface_hub import constants as hub_constants  # noqa: E402

from icet import download  # noqa: E402
from icet.config import load_config  # noqa: E402
from icet.errors import IcetError  # noqa: E402
from icet.io import read_jsonl, write_jsonl  # noqa: E402
from icet.judges.reward import HH_FORMAT  # noqa: E402
from icet.word_tokenizers import build_word_tokenizer  # noqa: E402
from icet.judges.vqa import score_utility  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: its config files

REPO = "OpenAssistant/reward-model-deberta-v3-large-v2"
# The repository as the Hub serves it: `main` has only the pickled checkpoint; the
# safetensors conversion (a PR by the Hub's conversion bot) is the ref refs/pr/3.
MAIN_FILES = {"config.json": b"{}", "pytorch_model.bin": b"pickle", "spm.model": b"sp",
              "tokenizer_config.json": b"{}", "special_tokens_map.json": b"{}",
              "added_tokens.json": b"{}"}
REVISIONS = {
    "main": ("1" * 40, MAIN_FILES),
    "refs/pr/3": ("3" * 40, {**MAIN_FILES, "model.safetensors": b"safe-weights"}),
}


def fake_hub(cache: Path):
    """snapshot_download serving each revision's own files into a Hub-style cache folder."""
    from huggingface_hub.utils import filter_repo_objects

    def snapshot_download(repo_id, *, revision, allow_patterns=None, ignore_patterns=None, **_):
        sha, files = REVISIONS[revision]
        snap = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha
        for name in filter_repo_objects(files, allow_patterns=allow_patterns,
                                        ignore_patterns=ignore_patterns):
            (snap / name).parent.mkdir(parents=True, exist_ok=True)
            (snap / name).write_bytes(files[name])
        return str(snap)

    return snapshot_download


@pytest.fixture
def hub(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub(tmp_path / "cache"))
    return tmp_path


def test_bin_only_revision_stops_at_download_with_one_line(hub):
    with pytest.raises(IcetError) as err:
        download.download_snapshot(REPO, "main", hub / "judge")
    assert f"{REPO}@main: no *.safetensors weights" in str(err.value)
    assert "refs/pr/N" in str(err.value) and "\n" not in str(err.value)
    assert not (hub / "judge").exists()


def test_config_pins_the_safetensors_ref_and_the_download_has_weights(hub):
    spec = load_config(REPO_ROOT / "config.yaml")["judges"]["utility_reward"]
    assert spec["repo"] == REPO
    manifest = download.download_snapshot(REPO, spec["revision"], hub / "judge")
    assert "model.safetensors" in manifest["files"] and "pytorch_model.bin" not in manifest["files"]
    assert manifest["resolved_sha"] == REVISIONS[spec["revision"]][0]


def test_config_sends_the_text_pair_format_to_the_utility_judge():
    from icet.config import utility_reward_settings  # what rule score_utility passes on

    paper = utility_reward_settings(load_config(REPO_ROOT / "config.yaml"))
    assert paper == {"batch_size": 16, "max_length": 512, "input_format": "pair"}
    toy = utility_reward_settings(load_config(REPO_ROOT / "config.yaml",
                                              REPO_ROOT / "toy" / "toy.yaml"))
    assert toy["input_format"] == "hh"  # the toy reward model was trained on HH text


WORDS = "how many blobs ? what colour is it two three red blue there are the it is"


def _tiny_deberta(folder: Path):
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    tok = build_word_tokenizer([WORDS, "Human : Assistant :"], folder, chat_template=None)
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=1,
        pad_token_id=tok.pad_token_id)).eval()
    with torch.no_grad():  # a random head this small gives near-equal scores to every input
        model.classifier.weight.normal_(0.0, 20.0)
    model.save_pretrained(folder)
    return model, tok


def test_score_utility_reads_question_and_response_as_a_text_pair(tmp_path):
    model, tok = _tiny_deberta(tmp_path / "rm")
    rows = [{"id": f"vqa-{i}", "layer": 0, "prompt": q, "response": r, "answer": a}
            for i, (q, r, a) in enumerate([("how many blobs ?", "there are two", "2"),
                                           ("what colour is it ?", "it is red", "blue")])]
    write_jsonl(tmp_path / "shard.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    score_utility([str(tmp_path / "shard.jsonl")], str(out), str(tmp_path / "rm"),
                  metric="contains", batch_size=2, max_length=64, input_format="pair")
    scored = read_jsonl(out)
    with torch.no_grad():
        pair = [float(model(**tok(r["prompt"], r["response"], return_tensors="pt")).logits[0, 0])
                for r in rows]
        single = [float(model(**tok(HH_FORMAT.format(prompt=r["prompt"], response=r["response"]),
                                    return_tensors="pt")).logits[0, 0]) for r in rows]
    assert [r["utility_reward"] for r in scored] == pytest.approx(pair, abs=1e-5)
    assert pair != pytest.approx(single, abs=1e-3)  # the two formats are told apart
    assert [r["correct"] for r in scored] == [True, False]
