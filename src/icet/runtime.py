"""Process-level settings every job shares: CPU threads, a clean stop, and the device."""

from __future__ import annotations

import signal
import sys
import threading

from icet.errors import IcetError

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


def job_device(device: str, gpus: int | None) -> str:
    """The device a job is told to use: `auto` in a job whose resources ask for a GPU means
    cuda (so a job placed on a node without one stops, see resolve_device); otherwise the
    config's value. `device: cpu` with GPU resources stays cpu: a deliberate choice (the
    toy's SLURM test submits GPU jobs to fake GPUs and runs them on the CPU)."""
    return "cuda" if device == "auto" and gpus and int(gpus) > 0 else device


def check_cuda(device: str) -> None:
    """`device: cuda` where this job sees no CUDA device is one line, not fp32 on the CPU
    for hours nor torch's "not compiled with CUDA" traceback."""
    import os

    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise IcetError(
            f"device {device!r} (config `device: cuda`, or `device: auto` in a job whose "
            f"resources ask for a GPU) but this job sees no CUDA device (torch "
            f"{torch.__version__}, {build}; CUDA_VISIBLE_DEVICES="
            f"{'unset' if visible is None else repr(visible)}): run it on a GPU node, or set "
            "`device: cpu` to run on the CPU deliberately")


def check_native_bf16(device: str = "cuda") -> None:
    """Stop with one line on a GPU without native bfloat16 (V100, T4: compute capability
    below 8.0). Every GPU job runs the bf16 checkpoints in bf16, which such a card only
    emulates, many times slower, rather than failing."""
    import torch

    if torch.cuda.is_bf16_supported(including_emulation=False):
        return
    major, minor = torch.cuda.get_device_capability(device)
    raise IcetError(
        f"GPU {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no "
        "native bfloat16, which every GPU job computes in (it would only be emulated, many "
        "times slower): run on an Ampere or newer GPU (compute capability 8.0+: A100, L40S, "
        "H100), e.g. with the model's resources.gpu_model")


def release_memory(device: str) -> None:
    """Give the memory of objects just deleted back to the device. PyTorch's CUDA caching
    allocator keeps freed blocks reserved for this process; without emptying it, a judge
    deleted before the next one loads can leave its ~16 GB reserved beside the next's."""
    import gc

    import torch

    gc.collect()  # a judge's weights may sit in reference cycles (modules, hooks)
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def resolve_device(device: str = "auto") -> str:
    """auto -> cuda when a GPU is visible to this job, else cpu; cuda without one: an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_cuda(device)
    return device


# What picks the CPU's arithmetic kernels, when set (scripts/kernel-path-env emulates a path
# with them): ATen's own, oneDNN's and MKL's.
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                   "MKL_CBWR")


def cpu_kernels() -> dict:
    """The CPU kernel path a process computes on: torch's capability and the settings that
    cap or force it, so a number can be traced to the arithmetic that made it."""
    import os

    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability().lower(),
            "settings": {k: os.environ[k] for k in KERNEL_SETTINGS if k in os.environ}}
