"""Process-level settings every job shares: CPU threads, a clean stop, and the device."""

from __future__ import annotations

import signal
import sys
import threading

STOP_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM'd process


def configure(threads: int | None = None) -> None:
    """Use exactly the cores Snakemake gave this job (torch would otherwise take them all),
    and stop cleanly on SIGTERM."""
    import torch

    stop_cleanly_on_sigterm()
    if threads:
        torch.set_num_threads(int(threads))


def _stop(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the cleanup
    sys.stderr.write("icet: stopped by SIGTERM (preemption or scancel); finished shards and "
                     "checkpoints are kept, a rerun resumes from them\n")
    sys.stderr.flush()
    raise SystemExit(STOP_EXIT_CODE)


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM (SLURM preemption, scancel, Snakemake stopping a job) becomes SystemExit.

    By default SIGTERM kills Python at once: no `finally` runs, so a half-written `.part`
    stays behind. As an exception it unwinds like Ctrl-C: the write in progress is
    discarded (icet.io), every shard and checkpoint already renamed into place stays, and
    the exit code is 143. Only the main thread can install a handler; elsewhere a no-op.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)


def resolve_device(device: str = "auto") -> str:
    """auto -> cuda when a GPU is visible to this job, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
