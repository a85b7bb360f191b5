"""VLM adapters: one interface (`VLMAdapter`) over the supported architectures, plus their loader.

The names below are imported on first use, so `icet.models.registry` (torch-free, read by the
Snakefile at parse time) can be imported without pulling in torch and transformers.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"Generation": "icet.models.base", "VLMAdapter": "icet.models.base",
         "LlavaAdapter": "icet.models.llava", "load_adapter": "icet.models.loading"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'icet.models' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
