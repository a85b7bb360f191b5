"""The machine a job ran on, as far as it moves numbers: the CPU, torch's CPU kernel path and
the environment settings that pick CPU kernels or thread counts.

PyTorch dispatches its CPU kernels by instruction set (`default`, `avx2`, `avx512`;
ATEN_CPU_CAPABILITY forces one), and MKL and oneDNN dispatch on their own settings, so the
same code and seed give other bytes on another machine (docs/kernel-paths.md). Every job's
link (icet.chain) and the run manifest record this, so an auditor can tell which path made
which file. Only the variables named here are read from the environment: never a secret.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

# Environment settings that change which CPU kernels run, or how many threads split the work
# (a reduction split differently rounds differently). Unset ones are recorded as null.
KERNEL_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
               "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo; elsewhere what platform says, or None)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def machine(load_torch: bool = False) -> dict[str, Any]:
    """CPU model and count, the kernel-picking environment settings, and (when torch is
    loaded in this process, or `load_torch`) torch's CPU capability, its thread count and the
    GPU it sees. A job that never imported torch ran no torch kernel, so it is not imported
    just to ask (that costs seconds per job)."""
    record: dict[str, Any] = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "environment": {name: os.environ.get(name) for name in KERNEL_VARS}}
    if load_torch or "torch" in sys.modules:
        import torch

        record["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        record["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            record["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return record
