"""Comparison subsets under the same budget as QUAD: uniform random and top-k by influence.

Budget semantics (shared with QUAD, see `take_budget`): documents are taken in a given order until the budget is
met. 'docs': exactly `budget` documents. 'tokens': up to and including the document whose tokens make the running
total reach `budget` (the last document is not cut, so the total lands in [budget, budget + its length)).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BudgetUnit = Literal["docs", "tokens"]


class BudgetError(ValueError):
    """A budget the pool cannot meet; the message says what to change."""


def check_budget(n: int, lengths: np.ndarray | None, budget: int, unit: BudgetUnit, who: str) -> None:
    """Raise BudgetError unless `n` documents (with `lengths` tokens each) can meet `budget` in `unit`."""
    if budget < 1:
        raise BudgetError(f"{who}: budget must be >= 1, got {budget}")
    if n == 0:
        raise BudgetError(f"{who}: the pool is empty: nothing to select from (check the upstream stages' output)")
    if unit == "docs":
        if budget > n:
            raise BudgetError(
                f"{who}: a budget of {budget} docs exceeds the pool of {n} documents: lower budget to at most {n} "
                "or give a larger pool"
            )
        return
    if unit != "tokens":
        raise BudgetError(f"{who}: budget unit must be 'docs' or 'tokens', got {unit!r}")
    if lengths is None:
        raise BudgetError(f"{who}: a tokens budget needs the token count of every document (lengths)")
    total = int(np.asarray(lengths).sum())
    if budget > total:
        raise BudgetError(
            f"{who}: a budget of {budget} tokens exceeds the whole pool ({n} documents, {total} tokens): lower "
            f"budget to at most {total} or give a larger pool"
        )


def take_budget(order: np.ndarray, lengths: np.ndarray | None, remaining: int, unit: BudgetUnit) -> np.ndarray:
    """The prefix of `order` (pool indices) that spends at most the `remaining` budget, as described above."""
    order = np.asarray(order, dtype=np.int64)
    if remaining <= 0:
        return order[:0]
    if unit == "docs":
        return order[:remaining]
    cumulative = np.cumsum(np.asarray(lengths, dtype=np.int64)[order])
    reach = int(np.searchsorted(cumulative, remaining, side="left"))  # first position with cumulative >= remaining
    return order[: reach + 1]


def random_select(
    n_or_lengths: int | np.ndarray, budget: int, unit: BudgetUnit = "docs", seed: int = 0
) -> np.ndarray:
    """Pool indices of a uniform random subset meeting the budget, in the random order they were drawn.

    `n_or_lengths`: the pool size (docs budget only) or the tokens per document.
    """
    lengths = None if np.isscalar(n_or_lengths) else np.asarray(n_or_lengths, dtype=np.int64)
    n = int(n_or_lengths) if lengths is None else len(lengths)
    check_budget(n, lengths, budget, unit, "random baseline")
    order = np.random.default_rng(seed).permutation(n)
    return take_budget(order, lengths, budget, unit)


def topk_select(
    scores: np.ndarray, lengths: np.ndarray | None, budget: int, unit: BudgetUnit = "docs"
) -> np.ndarray:
    """Indices into `scores` of the highest-scoring documents meeting the budget, best first.

    NaN scores (documents that were not scored) are never selected; ties go to the lower index.
    """
    scores = np.asarray(scores, dtype=np.float64)
    scored = np.flatnonzero(~np.isnan(scores))
    scored_lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)[scored]
    check_budget(len(scored), scored_lengths, budget, unit, "top-k baseline (scored documents)")
    order = scored[np.argsort(-scores[scored], kind="stable")]
    return take_budget(order, lengths, budget, unit)
