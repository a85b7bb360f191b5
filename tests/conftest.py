"""Test-wide settings: offline, quiet, one thread per test process (CI has 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ICET_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass


def pytest_report_header(config):
    """Name the CPU kernel path: results of training and sampling tests depend on it."""
    import torch

    return (f"torch CPU kernel path: {torch.backends.cpu.get_cpu_capability()} "
            f"(ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'unset')})")


def pytest_terminal_summary(terminalreporter):
    """Say in CI output that the real-SLURM test ran and passed (not merely skipped)."""
    passed = [r.nodeid for r in terminalreporter.stats.get("passed", [])
              if "test_slurm.py::test_toy_slice" in r.nodeid]
    if passed:
        terminalreporter.write_line(f"SLURM cluster test PASSED: {passed[0]}", green=True, bold=True)
