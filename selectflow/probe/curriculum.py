"""Curricula: orders in which a probe trains on one subset's budget of documents (the same documents for every
order, see `selectflow.probe.data.pack_train`), and how they compare with the shuffled order.

- shuffled: the seeded shuffle every probe uses (the baseline);
- domain, domain_reversed: whole domains one after the other, by domain name (ascending or descending), shuffled
  within a domain;
- easy_to_hard, hard_to_easy: by each document's own zlib ratio, most compressible (easiest) first or last.

A curriculum is judged by the area under its held-out curve (the mean held-out bits per byte over the evaluated
steps: lower = learned sooner) and by the steps it needs to reach a held-out level, paired with the shuffled order
over seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from selectflow.compression import compression_ratio

Curriculum = Literal["shuffled", "domain", "domain_reversed", "easy_to_hard", "hard_to_easy"]
CURRICULA: tuple[str, ...] = Curriculum.__args__
BASELINE_ORDER = "shuffled"


def reorder_for(order: str, texts: list[str], domains: list[str | None]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The function `pack_train` applies to the budget's documents (indices in shuffled order) for this curriculum
    (None: keep the shuffle)."""
    if order == BASELINE_ORDER:
        return None
    if order in ("domain", "domain_reversed"):
        labels = ["" if d is None else d for d in domains]

        def by_domain(chosen: np.ndarray) -> np.ndarray:
            names = sorted({labels[i] for i in chosen}, reverse=order == "domain_reversed")
            return np.concatenate([[i for i in chosen if labels[i] == name] for name in names]).astype(np.int64)

        return by_domain
    if order in ("easy_to_hard", "hard_to_easy"):
        sign = -1.0 if order == "easy_to_hard" else 1.0

        def by_ratio(chosen: np.ndarray) -> np.ndarray:
            ratios = np.array([compression_ratio(texts[i], "zlib", 9) if texts[i] else 1.0 for i in chosen])
            return chosen[np.argsort(sign * ratios, kind="stable")]  # ties keep the seeded shuffle

        return by_ratio
    raise ValueError(f"curriculum: unknown order {order!r} (known: {', '.join(CURRICULA)})")


def area_under_curve(curve: list[dict], column: str = "reference_bpb") -> float:
    """Mean held-out bits per byte over the evaluated steps after step 0 (lower: learned sooner)."""
    values = [row[column] for row in curve if row["step"] > 0 and row.get(column) is not None]
    if not values:
        raise ValueError(f"curriculum: the curve has no {column} after step 0")
    return float(np.mean(values))
