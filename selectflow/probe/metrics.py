"""Probe metrics that need more than one number: prequential code length and learning speed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

LN2 = math.log(2.0)


def prequential_bits_per_byte(step_nats: Sequence[float], step_bytes: Sequence[int]) -> float:
    """Area under the training curve in bits per byte: Σ_steps loss (bits, summed over tokens) / Σ_steps bytes.

    Each step's loss is measured on its batch *before* the model updates on it, so this is the prequential code
    length of the data (how many bits the learner needs to transmit it while learning it) per UTF-8 byte.
    """
    total_bytes = sum(step_bytes)
    if total_bytes <= 0:
        raise ValueError("prequential code length: the batches hold no bytes")
    return sum(step_nats) / LN2 / total_bytes


def steps_to_level(steps: Sequence[int], losses: Sequence[float | None], level: float) -> int | None:
    """First evaluated step whose held-out loss is <= level (None if never reached)."""
    for step, loss in zip(steps, losses):
        if loss is not None and not math.isnan(loss) and loss <= level:
            return int(step)
    return None


def speed_level(initial: float, finals: Sequence[float], fraction: float) -> float:
    """A held-out loss level comparable across subsets of one run: `fraction` of the way from the (shared) initial
    loss to the best final loss among them."""
    if not finals:
        raise ValueError("speed level: no final losses to compare")
    return initial - fraction * (initial - min(finals))


def learning_speed(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float | None]]], fraction: float, level: float | None = None
) -> tuple[float, dict[str, int | None]]:
    """Steps each subset needs to reach one shared held-out loss level.

    `curves`: name -> (evaluated steps, held-out losses), all starting at step 0 from the same initial model and
    evaluated on the same blocks. Without an explicit `level`, it is `speed_level(initial, finals, fraction)`.
    """
    if not curves:
        raise ValueError("learning speed: no curves given")
    if level is None:
        initials = {name: next(l for l in losses if l is not None) for name, (_, losses) in curves.items()}
        initial = max(initials.values())
        finals = [next(l for l in reversed(losses) if l is not None) for _, losses in curves.values()]
        level = speed_level(initial, finals, fraction)
    return level, {name: steps_to_level(steps, losses, level) for name, (steps, losses) in curves.items()}
