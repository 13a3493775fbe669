"""Quotas per stratum (cluster or domain): how much of a budget each part of the pool gets, so that a selector run
inside each quota cannot turn "least redundant" or "most influential" into "one domain".

A quota is in budget units (documents or tokens). 'pool': each stratum's share of the pool; 'uniform': equal shares.
Either way no stratum gets more than it holds; what a full stratum cannot take goes to the others in proportion to
their shares (water-filling), and whole units are assigned by largest remainder, so the quotas sum to the budget.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from selectflow.select.baselines import BudgetError

QuotaRule = Literal["pool", "uniform"]


def stratum_quotas(sizes: np.ndarray, budget: int, rule: QuotaRule) -> np.ndarray:
    """Per stratum, its quota of `budget` given what it holds (`sizes`, in budget units)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget > sizes.sum():
        raise BudgetError(f"strata: a budget of {budget} exceeds the {sizes.sum()} the strata hold together")
    weights = sizes.astype(np.float64) if rule == "pool" else (sizes > 0).astype(np.float64)
    share = np.zeros(len(sizes))
    capped = np.zeros(len(sizes), dtype=bool)
    left = float(budget)
    while (open_weight := weights[~capped].sum()) > 0:  # each pass caps at least one stratum or ends
        share[~capped] = left * weights[~capped] / open_weight
        over = ~capped & (share > sizes)
        if not over.any():
            break
        share[over] = sizes[over]
        capped |= over
        left = budget - share[capped].sum()
    quotas = np.floor(share).astype(np.int64)
    remainder = share - quotas
    room = quotas < sizes
    for index in np.argsort(-np.where(room, remainder, -1.0), kind="stable")[: budget - quotas.sum()]:
        quotas[index] += 1
    return quotas
