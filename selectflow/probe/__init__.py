"""Probe training: a short run of a small causal LM on a subset, at an equal token budget for every subset."""

from selectflow.probe.data import TrainBlocks, budget_blocks, pack_eval, pack_train, sample_to_tokens
from selectflow.probe.metrics import learning_speed, prequential_bits_per_byte, speed_level, steps_to_level
from selectflow.probe.model import build_model, resolve_device, tiny_llama
from selectflow.probe.tokenizer import ProbeTokenizer, load_tokenizer
from selectflow.probe.train import ProbeRun, learning_rate, train_probe

__all__ = [
    "ProbeRun", "ProbeTokenizer", "TrainBlocks", "budget_blocks", "build_model", "learning_rate", "learning_speed",
    "load_tokenizer", "pack_eval", "pack_train", "prequential_bits_per_byte", "resolve_device", "sample_to_tokens",
    "speed_level", "steps_to_level", "tiny_llama", "train_probe",
]
