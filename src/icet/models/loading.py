"""Load a downloaded (or toy-built) VLM folder into an adapter, the same way for every stage.

Weights come from safetensors only and remote code is never run: a checkpoint is data, not a
program. The folder's config.json decides the architecture (its model_type, looked up in
icet.models.registry: no architecture is named here), so a wrong folder fails here with its
name rather than deep inside transformers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from icet.errors import IcetError
from icet.io import read_json
from icet.models import registry
from icet.models.base import VLMAdapter

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" = the GPU if there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from icet.runtime import check_cuda

    check_cuda(str(device))  # cuda where there is none: one line
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise IcetError(f"device {device!r} is not a torch device (or 'auto')") from None


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on a GPU (what the released checkpoints use; one line on a GPU that only emulates
    it), fp32 on a CPU (bf16 matmuls are slow there)."""
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif not isinstance(dtype, torch.dtype):
        if str(dtype) not in _DTYPES:
            raise IcetError(f"dtype {dtype!r} is not one of {', '.join(sorted(_DTYPES))}")
        dtype = _DTYPES[str(dtype)]
    if dtype == torch.bfloat16 and device.type == "cuda":
        from icet.runtime import check_native_bf16

        check_native_bf16(str(device))
    return dtype


def model_type_of(model_dir: str | os.PathLike) -> str:
    """The model_type in `model_dir`/config.json; IcetError naming the folder if absent/unknown."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise IcetError(f"{folder}: model folder not found")
    if not (folder / "config.json").is_file():
        raise IcetError(f"{folder}: no config.json (not a transformers model folder)")
    config = read_json(folder / "config.json")
    model_type = config.get("model_type") if isinstance(config, dict) else None
    registry.of_model_type(model_type, where=str(folder))
    return model_type


def image_processor_info(processor: Any) -> dict[str, Any]:
    """Which image processor (and PIL or torchvision backend) made the pixels: it changes numbers."""
    image_processor = getattr(processor, "image_processor", None)
    name = type(image_processor).__name__ if image_processor is not None else None
    backend = getattr(image_processor, "backend", None)
    if not isinstance(backend, str):
        backend = "pil" if name and name.endswith("Pil") else None
    return {"image_processor_class": name, "image_processor_backend": backend}


def image_processor_of(model_dir: str | os.PathLike) -> dict[str, Any]:
    """`image_processor_info` of the processor `load_adapter` would load, without the weights
    (a sweep fingerprints it before deciding whether to load the model at all)."""
    folder = Path(model_dir)
    model_type = model_type_of(folder)
    processor_class = registry.load_object(registry.of_model_type(model_type, where=str(folder)).processor)
    try:
        processor = processor_class.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise IcetError(f"{folder}: cannot load {model_type} processor "
                        f"({str(err).splitlines()[0]})") from None
    return image_processor_info(processor)


def load_adapter(model_dir: str | os.PathLike, *, peft_adapter: str | os.PathLike | None = None,
                 device: str = "cpu", dtype: str | torch.dtype | None = None,
                 name: str | None = None, system_prompt: str | None = None,
                 image_preprocessing: str = "processor",
                 num_layers: int | None = None) -> VLMAdapter:
    """Load model + processor from `model_dir` (optionally a peft adapter on top), eval mode.

    `system_prompt` and `image_preprocessing` are the model's config entries of the same
    names (VLMAdapter.set_prompting); the defaults leave the checkpoint's chat template and
    processor as they are. `num_layers`, the run config's N for this model, must be the
    checkpoint's (one line naming the model, both numbers and the config.json if not)."""
    import transformers

    folder = Path(model_dir)
    model_type = model_type_of(folder)
    entry = registry.of_model_type(model_type, where=str(folder))
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    model_class = registry.load_object(entry.model_class)
    try:
        model = model_class.from_pretrained(folder, dtype=torch_dtype, use_safetensors=True,
                                            local_files_only=True)
        processor = registry.load_object(entry.processor).from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise IcetError(f"{folder}: cannot load {model_type} model ({str(err).splitlines()[0]})") from None
    model.to(torch_device).eval()
    if num_layers is not None:
        registry.check_num_layers(entry.name, name or folder.name, num_layers, folder, config=model.config)

    info: dict[str, Any] = {
        "model_dir": str(folder),
        "model_class": type(model).__name__,
        "processor_class": type(processor).__name__,
        "tokenizer_class": type(getattr(processor, "tokenizer", None)).__name__,
        **image_processor_info(processor),
        "device": str(torch_device),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "peft_adapter": None,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    if peft_adapter is not None:
        model = wrap_peft(model, peft_adapter)
        import peft

        info.update(peft_adapter=str(peft_adapter), peft_version=peft.__version__)
    adapter = registry.load_object(entry.adapter)(model, processor, name=name or folder.name, info=info)
    adapter.set_prompting(system_prompt, image_preprocessing)
    return adapter


def wrap_peft(model: Any, peft_adapter: str | os.PathLike) -> Any:
    """Put a saved peft adapter (e.g. L-PPO's LoRA) on `model`, frozen and in eval mode."""
    from peft import PeftModel

    adapter_dir = Path(peft_adapter)
    if not adapter_dir.is_dir():
        raise IcetError(f"{adapter_dir}: peft adapter folder not found")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise IcetError(f"{adapter_dir}: no adapter_config.json (not a peft adapter folder)")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        # peft would fall back to a pickled adapter_model.bin; we load safetensors only.
        raise IcetError(f"{adapter_dir}: no adapter_model.safetensors")
    try:
        wrapped = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    except (OSError, ValueError, KeyError) as err:
        raise IcetError(f"{adapter_dir}: cannot load peft adapter ({str(err).splitlines()[0]})") from None
    return wrapped.eval()
