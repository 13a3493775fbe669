"""The probe model: a tiny Llama built from ProbeModelConfig with a fixed seed, or a local checkpoint to continue."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from selectflow import devices
from selectflow.config import ProbeModelConfig

_INIT_LOCK = threading.Lock()


def resolve_device(device: str) -> torch.device:
    return devices.resolve_device(device, "probe.device")


def tiny_llama(cfg: ProbeModelConfig, vocab_size: int, seed: int) -> torch.nn.Module:
    """A freshly initialized Llama-style causal LM (no download); identical weights for the same seed."""
    with _INIT_LOCK:  # transformers' lazy first import, from two Dask threads at once, fails in one of them
        from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.seq_len,
        tie_word_embeddings=cfg.tie_embeddings,
        attention_dropout=0.0,
    )
    # The init draws from torch's global generator: probes built at once on threads of one process (Dask thread
    # workers) would reseed it under each other and break "the same init for every subset of a seed".
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.config.use_cache = False
    return model


def load_checkpoint(path: str, vocab_size: int) -> torch.nn.Module:
    """A local HF causal-LM folder to continue training from (never downloads)."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"probe.init_checkpoint {folder} is not a local Hugging Face model folder (no config.json); "
            "point it at a folder saved with save_pretrained(), or unset it to train a fresh tiny model"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, torch_dtype=torch.float32)
    embeddings = model.get_input_embeddings().weight.shape[0]
    if embeddings < vocab_size:
        raise ValueError(
            f"probe.init_checkpoint {folder} has {embeddings} token embeddings but the tokenizer has {vocab_size} "
            "tokens; use the checkpoint's own tokenizer (leave probe.tokenizer_path unset)"
        )
    model.config.use_cache = False
    return model


def build_model(cfg: ProbeModelConfig, vocab_size: int, seed: int, init_checkpoint: str | None) -> torch.nn.Module:
    if init_checkpoint:
        return load_checkpoint(init_checkpoint, vocab_size)
    return tiny_llama(cfg, vocab_size, seed)
