"""Quotas per stratum (cluster or domain): how much of a budget each part of the pool gets, so that a selector run
inside each quota cannot turn "least redundant" or "most influential" into "one domain".

A quota is in budget units (documents or tokens). 'pool': each stratum's share of the pool; 'uniform': equal shares;
'reference': shares in proportion to a target count per stratum (the reference set's documents in each cluster).
No stratum gets more than it holds; what a full stratum cannot take goes to the others in proportion to their
weights (water-filling), then, when every weighted stratum is full, in proportion to their pool share. Whole units
are assigned by largest remainder, so the quotas sum to the budget.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from selectflow.select.baselines import BudgetError

QuotaRule = Literal["pool", "uniform", "reference"]


def stratum_quotas(sizes: np.ndarray, budget: int, rule: QuotaRule, target: np.ndarray | None = None) -> np.ndarray:
    """Per stratum, its quota of `budget` given what it holds (`sizes`, in budget units) and, for rule 'reference',
    the `target` count per stratum."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget > sizes.sum():
        raise BudgetError(f"strata: a budget of {budget} exceeds the {sizes.sum()} the strata hold together")
    if rule == "reference" and target is None:
        raise ValueError("strata: quota 'reference' needs the target count per stratum")
    weights = {"pool": sizes, "uniform": sizes > 0, "reference": target}[rule]
    share = _water_fill(sizes, float(budget), np.asarray(weights, dtype=np.float64) * (sizes > 0))
    if (left := budget - share.sum()) > 1e-9:  # every weighted stratum is full: the rest by pool share
        share += _water_fill(sizes - share, left, (sizes - share).astype(np.float64))
    quotas = np.floor(share + 1e-9).astype(np.int64)
    remainder = share - quotas
    room = quotas < sizes
    for index in np.argsort(-np.where(room, remainder, -1.0), kind="stable")[: budget - quotas.sum()]:
        quotas[index] += 1
    return quotas


def _water_fill(sizes: np.ndarray, budget: float, weights: np.ndarray) -> np.ndarray:
    """Shares of `budget` in proportion to `weights`, none above its size; a full stratum's overflow is shared again
    among the rest. Less than `budget` in all when the weighted strata cannot hold it."""
    share = np.zeros(len(sizes))
    capped = weights <= 0
    left = budget
    while (open_weight := weights[~capped].sum()) > 0:  # each pass caps at least one stratum or ends
        share[~capped] = left * weights[~capped] / open_weight
        over = ~capped & (share > sizes)
        if not over.any():
            break
        share[over] = sizes[over]
        capped |= over
        left = budget - share[capped].sum()
    return share


def effective_strata(amounts) -> float:
    """exp(entropy) of the shares of these amounts (per stratum): how many strata a mix draws on, evenly counted
    (0.0 when it holds nothing)."""
    values = np.asarray([a for a in amounts if a > 0], dtype=np.float64)
    if values.size == 0:
        return 0.0
    shares = values / values.sum()
    return float(np.exp(-(shares * np.log(shares)).sum()))
