"""Atomic means durable: fsync before and after the rename, a folder swapped in
without a moment where the target is missing, stale `.part` siblings swept, and SIGTERM a
clean stop that keeps every finished shard (a real subprocess, really signalled)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


import icet  # noqa: E402
from icet import io  # noqa: E402
from icet.io import read_jsonl, write_jsonl  # noqa: E402
from tiny_models import build_tiny_llava, noise_image  # noqa: E402


def test_atomic_write_fsyncs_the_file_then_its_folder(tmp_path, monkeypatch):
    synced: list[tuple[int, bool]] = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        st = os.fstat(fd)
        synced.append((st.st_ino, stat.S_ISDIR(st.st_mode)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = tmp_path / "out" / "table.csv"
    io.write_text(target, "a,b\n1,2\n")
    file_ino, dir_ino = target.stat().st_ino, target.parent.stat().st_ino
    assert (file_ino, False) in synced and (dir_ino, True) in synced
    assert synced.index((file_ino, False)) < synced.index((dir_ino, True))

    # a folder: its files flushed (one syncfs, or fsync each where there is none), then
    # the folder holding it (the rename itself)
    real_syncfs, flushed = io._syncfs, []
    for has_syncfs in (True, False):
        synced.clear(), flushed.clear()

        def syncfs(path):
            flushed.append(path)
            return has_syncfs and real_syncfs(path)

        monkeypatch.setattr(io, "_syncfs", syncfs)
        with io.atomic_dir(tmp_path / "model") as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "weights.bin").write_bytes(b"\x00" * 8)  # not via atomic_path
        inner = tmp_path / "model" / "sub" / "weights.bin"
        assert flushed == [tmp]
        assert ((inner.stat().st_ino, False) in synced) == (not has_syncfs)
        assert (tmp_path.stat().st_ino, True) in synced


def _exchange_supported(tmp_path: Path) -> bool:
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.mkdir(), b.mkdir()
    try:
        return io._exchange(a, b)
    finally:
        shutil.rmtree(a), shutil.rmtree(b)


def test_atomic_dir_swaps_without_the_target_ever_missing(tmp_path, monkeypatch):
    if not _exchange_supported(tmp_path):
        pytest.skip("this file system has no RENAME_EXCHANGE (the fallback is tested below)")
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "old.txt").write_text("old")
    seen: list[tuple[str, bool]] = []

    def watch(name, real):
        def wrapped(*args, **kwargs):
            seen.append((f"before {name}", target.exists()))
            result = real(*args, **kwargs)
            seen.append((f"after {name}", target.exists()))
            return result
        return wrapped

    for module, name in ((os, "replace"), (os, "rename"), (os, "rmdir"), (shutil, "rmtree")):
        monkeypatch.setattr(module, name, watch(name, getattr(module, name)))
    with io.atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert seen and all(exists for _, exists in seen), seen
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_swap_fallback_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    """Without an exchange (NFS): the old folder waits under .old.part; a failed second
    rename restores it; one a killed job left behind is restored when next written."""
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace = os.replace

    def second_rename_fails(src, dst):
        if Path(dst) == target and not Path(src).name.endswith(".old.part"):
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="disk gone"):
        with io.atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (target / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]

    # a job killed between the two renames: target gone, the old folder set aside
    aside = tmp_path / ".adapter.0123abcd.old.part"
    real_replace(target, aside)
    assert io.sweep_parts(target) == [aside]
    assert (target / "old.txt").read_text() == "old" and not aside.exists()
    with io.atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_stale_part_siblings_are_swept_when_the_target_is_next_written(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    stale_file = out / ".layer-03.jsonl.k2j4x9_q.part"  # mkstemp's name, from a killed job
    stale_file.write_text('{"id": "half')
    stale_dir = out / ".images.ab12cd34.part"  # mkdtemp's name
    (stale_dir / "x").mkdir(parents=True)
    others = [out / ".layer-03.jsonl.x.k2j4x9_q.part",  # another target's part
              out / ".layer-04.jsonl.k2j4x9_q.part", out / "notes.part"]
    for path in others:
        path.write_text("keep")
    write_jsonl(out / "layer-03.jsonl", [{"id": "a"}])
    with io.atomic_dir(out / "images") as tmp:
        (tmp / "a.png").write_bytes(b"png")
    assert not stale_file.exists() and not stale_dir.exists()
    assert all(path.read_text() == "keep" for path in others)
    assert read_jsonl(out / "layer-03.jsonl") == [{"id": "a"}]


# ---- SIGTERM: a real process, really signalled ---------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time
    import icet.sweep as sweep

    model_dir, data, index = sys.argv[1:4]
    real_records, calls = sweep._records, []

    def records(*args, **kwargs):
        rows = real_records(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            return rows

        def slowly():  # layer 1's shard is being written when SIGTERM arrives
            yield rows[0]
            print("writing", flush=True)
            time.sleep(120)
            yield from rows[1:]
        return slowly()

    sweep._records = records
    sweep.run_sweep_job(model_dir, data, [0, 1, 2], index, model_name="tiny",
                        variant="original", testset="t", max_new_tokens=3, engine="naive",
                        batch_size=2, seed=0, threads=1)
""")


def test_sigterm_stops_cleanly_and_keeps_finished_shards(tmp_path):
    model_dir = build_tiny_llava(tmp_path / "model")
    (tmp_path / "img").mkdir()
    noise_image(0, 32, 32).save(tmp_path / "img" / "a.png")
    data = tmp_path / "data.jsonl"
    write_jsonl(data, [{"id": f"r-{i}", "prompt": "what is in the picture ?", "image": "img/a.png",
                        "kind": "benign", "category": "what", "answer": None, "source": "test"}
                       for i in range(3)])
    index = tmp_path / "out" / "chunk-00.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(icet.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "ICET_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(model_dir), str(data), str(index)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        out = index.parent
        assert list(out.glob(".layer-01.jsonl.*.part")), "the shard in progress is on disk"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("icet: stopped by SIGTERM")
    # layer 0 finished (shard and marker), layer 1 was cut: nothing half-written remains
    assert sorted(p.name for p in out.iterdir()) == ["layer-00.jsonl", "layer-00.meta.json"]
    kept = (out / "layer-00.jsonl").read_bytes()

    from icet.sweep import run_sweep_job

    todo = run_sweep_job(model_dir, data, [0, 1, 2], index, model_name="tiny",
                         variant="original", testset="t", max_new_tokens=3, engine="naive",
                         batch_size=2, seed=0, threads=1)
    assert todo == [1, 2] and (out / "layer-00.jsonl").read_bytes() == kept
    assert index.exists() and not list(out.glob(".*.part"))


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),  # Python's own writes (errno ENOSPC)
    RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"),  # safetensors
    RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed "
                 "writing file data/0: file write failed"),  # torch.save, on a nearly full disk
])
def test_a_full_disk_is_one_line_and_keeps_the_old_output(tmp_path, monkeypatch, error):
    from icet.errors import IcetError

    target, folder = tmp_path / "scores.jsonl", tmp_path / "adapter"
    write_jsonl(target, [{"id": "old"}])
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"old")
    from types import SimpleNamespace

    monkeypatch.setattr(io.shutil, "disk_usage", lambda path: SimpleNamespace(total=10, used=10, free=0))

    def fail(tmp):
        raise error

    with pytest.raises(IcetError) as err:
        with io.atomic_path(target) as tmp:
            fail(tmp)
    assert str(err.value).startswith(f"{target}: no space left on the device while writing it")
    assert "\n" not in str(err.value) and read_jsonl(target) == [{"id": "old"}]
    with pytest.raises(IcetError, match="adapter: no space left on the device"):
        with io.atomic_dir(folder) as tmp:
            fail(tmp)
    assert (folder / "w.bin").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "scores.jsonl"]  # no .part


def test_a_write_error_that_is_no_full_disk_stays_what_it_is(tmp_path):
    with pytest.raises(RuntimeError, match="file write failed"):  # plenty of space: not "full"
        with io.atomic_path(tmp_path / "x.json"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
