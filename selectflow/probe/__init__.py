"""Probe training: a short run of a small causal LM on a subset, at an equal token budget for every subset.

The names below are imported from their modules on first use (PEP 562), not when the package is: a stage that
imports only the statistics (`compare`) or the curricula does not import the training loop, so its code
fingerprint does not change when the training loop does."""

from importlib import import_module

_HOMES = {
    "TrainBlocks": "data", "budget_blocks": "data", "pack_eval": "data", "pack_train": "data",
    "sample_to_tokens": "data",
    "learning_speed": "metrics", "prequential_bits_per_byte": "metrics", "speed_level": "metrics",
    "steps_to_level": "metrics",
    "build_model": "model", "resolve_device": "model", "tiny_llama": "model",
    "ProbeTokenizer": "tokenizer", "load_tokenizer": "tokenizer",
    "ProbeRun": "train", "learning_rate": "train", "train_probe": "train",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
