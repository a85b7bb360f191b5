"""Seeds for every random source we use, so a rerun gives the same bytes."""

import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import torch

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    # Deterministic cuBLAS needs a fixed workspace, read when its handle is created (the first
    # CUDA matmul, after this call); without it deterministic mode warns at every matmul.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def generator(seed: int) -> np.random.Generator:
    """A NumPy generator for data building: independent of the global state."""
    return np.random.default_rng(seed)
