"""Which L-PPO checkpoint a rerun resumes from: the newest one whose files all read whole.

A checkpoint folder is renamed into place only when complete (icet.io.atomic_dir), but a
file in it can still be cut later (a full disk on a file system without write-back
guarantees, a copy that stopped, a quota). Loading such a file fails deep inside
safetensors or torch with an error that names no file. So before any weight is loaded each
checkpoint is read through, newest first: a broken one is named in the log and the next
older one resumes (the steps since are redone, with the same bytes: every step is seeded);
when none is whole, one line names the broken file.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

from icet.errors import IcetError

# The files every checkpoint holds besides its adapter and RNG states (trainer.save_checkpoint).
REQUIRED = ("state.json", "value_head.safetensors", "optimizer.pt", "scheduler.pt")


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read whole, or None: safetensors must cover their header's
    tensors, torch.save files (zip archives) must pass their CRCs, JSON must parse."""
    if not path.is_file():
        return f"{path}: missing"
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                f.keys()
        elif path.suffix == ".pt":
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"{path}: damaged (member {bad} fails its CRC)"
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        return f"{path}: damaged ({type(err).__name__}: {str(err).splitlines()[0]})"
    except Exception as err:  # safetensors raises its own SafetensorError
        if type(err).__name__ != "SafetensorError":
            raise
        return f"{path}: damaged ({str(err).splitlines()[0]})"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """The first file of checkpoint `folder` that does not read whole, or None."""
    files = [folder / name for name in REQUIRED]
    files += sorted((folder / "adapter").glob("*.safetensors")) or [folder / "adapter" / "*.safetensors"]
    files += sorted(folder.glob("rng-*.json")) + sorted(folder.glob("rng-*.safetensors"))
    for path in files:
        problem = file_problem(path)
        if problem:
            return problem
    return None


def intact(found: list[tuple[int, Path]], logger: logging.Logger) -> list[tuple[int, Path]]:
    """`found` (trainer.checkpoint_dirs: oldest first) up to its newest intact checkpoint.
    A broken newer one is skipped with a warning naming the file; if every one is broken,
    one line naming the newest's broken file (nothing is deleted: the user decides)."""
    problems = []
    for position in range(len(found) - 1, -1, -1):
        problem = checkpoint_problem(found[position][1])
        if problem is None:
            for skipped in problems:
                logger.warning("L-PPO: %s; resuming from the older %s", skipped,
                               found[position][1])
            return found[:position + 1]
        problems.append(problem)
    if problems:
        folder = found[-1][1].parent
        raise IcetError(f"{problems[0]}; no intact L-PPO checkpoint to resume from "
                        f"({len(found)} in {folder}): delete {folder} to train from the start")
    return found
