"""Resumable shards: a finished shard is kept byte for byte, a changed input recomputes it."""

import os

from icet.io import write_jsonl
from icet.shards import expand, fingerprint, is_done, mark_done, shard_path, write_index


def test_fingerprint_changes_with_settings_and_file_content(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("a\n")
    key = fingerprint({"max_new_tokens": 8}, [data])
    assert key == fingerprint({"max_new_tokens": 8}, [data])
    assert key != fingerprint({"max_new_tokens": 9}, [data])
    data.write_text("b\n")
    assert key != fingerprint({"max_new_tokens": 8}, [data])


def test_fingerprint_of_folder_covers_every_file(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.bin").write_bytes(b"1")
    key = fingerprint({}, [folder])
    (folder / "sub" / "w.bin").write_bytes(b"2")
    assert fingerprint({}, [folder]) != key


def test_done_only_with_matching_key_and_untouched_file(tmp_path):
    write_jsonl(shard_path(tmp_path, 3), [{"id": "x"}])
    assert not is_done(tmp_path, 3, "k")  # no sidecar yet: an interrupted job's shard
    mark_done(tmp_path, 3, "k")
    assert is_done(tmp_path, 3, "k")
    assert not is_done(tmp_path, 3, "other")
    shard_path(tmp_path, 3).write_text('{"id": "tampered"}\n')
    assert not is_done(tmp_path, 3, "k")


def test_index_lists_shards_and_expand_resolves_them(tmp_path):
    for layer in (0, 1):
        write_jsonl(shard_path(tmp_path, layer), [{"layer": layer}])
    index = tmp_path / "chunk-00.json"
    write_index(index, tmp_path, [1, 0])
    files = expand([index, tmp_path / "other.jsonl"])
    assert [os.path.basename(f) for f in files] == ["layer-00.jsonl", "layer-01.jsonl", "other.jsonl"]


def _package_copy(tmp_path):
    import shutil

    from icet.shards import PACKAGE_DIR

    copy = tmp_path / "icet"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_code_hash_follows_the_sweep_code_and_nothing_else(tmp_path):
    from icet.shards import code_hash

    copy = _package_copy(tmp_path)
    key = code_hash(root=copy)
    assert key == code_hash()  # the copy is the installed code
    (copy / "report" / "tables.py").write_text("# not sweep code\n", encoding="utf-8")
    assert code_hash(root=copy) == key
    engine = copy / "engine.py"
    engine.write_text(engine.read_text(encoding="utf-8") + "\n# a fix\n", encoding="utf-8")
    assert code_hash(root=copy) != key
    engine_fixed = code_hash(root=copy)
    (copy / "models" / "new_adapter.py").write_text("X = 1\n", encoding="utf-8")
    assert code_hash(root=copy) != engine_fixed  # a package covers every module in it
