"""Naive ZIP, written straight from the description (the reference's algorithm and cost), as the ground truth.

Every score compresses the whole list ``str(records).encode()`` with ``zlib.compress(..., 9)`` from scratch, like
USTC-StarTeam/ZIP's ``get_compression_ratio``; a multiprocessing pool maps the scores like the reference's
``pool.map``. Tie rule (same as selectflow.select.zip): lowest pool position among equal ratios. Unused documents
only in stage 1, K1/K2 clamped to what is left (see selectflow.select.zip for why).

    from bench.zip.naive import naive_zip
    ids = naive_zip(records, budget=300, k1=60, k2=20, k3=10, processes=2)
"""

from __future__ import annotations

import math
import multiprocessing
import time
import zlib
from collections.abc import Callable, Sequence


def ratio(records: list) -> float:
    s = str(records).encode("utf-8")
    return len(s) / len(zlib.compress(s, 9))


def naive_zip(
    records: Sequence[object],
    budget: int,
    k1: int = 10_000,
    k2: int = 200,
    k3: int = 100,
    processes: int = 1,
    tokens: Sequence[int] | None = None,
    max_rounds: int | None = None,
    on_round: Callable[[int, dict], None] | None = None,
) -> list[int]:
    """Pool positions of the selected records, in selection order. `tokens` set = a tokens budget."""
    records = list(records)
    n = len(records)
    pool = multiprocessing.get_context("fork").Pool(processes) if processes > 1 else None
    mapper = pool.map if pool is not None else (lambda f, xs: list(map(f, xs)))
    try:
        pi = mapper(ratio, [[r] for r in records])  # π: every record's own ratio
        used = [False] * n
        selected: list[int] = []

        def done() -> bool:
            if tokens is None:
                return len(selected) >= budget
            return sum(tokens[i] for i in selected) >= budget

        rnd = 0
        while not done():
            unused = [i for i in range(n) if not used[i]]
            if len(unused) < k3 or (max_rounds is not None and rnd >= max_rounds):
                break
            t0 = time.perf_counter()
            # stage 1: K1 lowest π
            stage1 = sorted(unused, key=lambda i: (pi[i], i))[: min(k1, len(unused))]
            # stage 2: ratio of selected + [x], written back, K2 lowest, all K2 leave the pool
            anchor = [records[i] for i in selected]
            scores = mapper(ratio, [anchor + [records[i]] for i in stage1])
            for i, s in zip(stage1, scores):
                pi[i] = s
            stage2 = sorted(stage1, key=lambda i: (pi[i], i))[: min(k2, len(unused))]
            for i in stage2:
                used[i] = True
                pi[i] = math.inf
            t1 = time.perf_counter()
            # stage 3: greedy, empty anchor
            picked: list[int] = []
            remaining = list(stage2)
            for _ in range(k3):
                base = [records[i] for i in picked]
                scores = mapper(ratio, [base + [records[i]] for i in remaining])
                best = min(range(len(remaining)), key=lambda j: (scores[j], remaining[j]))
                picked.append(remaining.pop(best))
            selected.extend(picked)
            if on_round is not None:
                on_round(rnd, {"seconds_coarse": t1 - t0, "seconds_fine": time.perf_counter() - t1,
                               "n_selected": len(selected)})
            rnd += 1
        return selected
    finally:
        if pool is not None:
            pool.close()
            pool.join()
