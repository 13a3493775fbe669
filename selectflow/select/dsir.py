"""DSIR (Xie et al. 2023): data selection by importance resampling toward a target set.

Both the target (the reference set) and the raw pool are modelled as bags of hashed word n-grams: the probability of
bucket b is its smoothed share of all n-gram counts. A document's log importance weight is the sum over its n-grams
of log p_target(b) - log p_raw(b), i.e. how much likelier the target model makes it than the pool model. The subset
is drawn without replacement with probability proportional to the weights (Gumbel top-k), so it follows the target
distribution instead of only taking the extreme documents.

Featurizing is per document and stateless (hashing), so it runs shard by shard; the models are sums of counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from selectflow.select.baselines import BudgetUnit, check_budget, take_budget


def ngram_counts(texts: Sequence[str], buckets: int, max_n: int) -> sp.csr_matrix:
    """Documents x buckets counts of their lowercased word 1..max_n-grams (every run of word characters is a
    word), hashed into `buckets`."""
    vectorizer = HashingVectorizer(n_features=buckets, ngram_range=(1, max_n), token_pattern=r"(?u)\b\w+\b",
                                   alternate_sign=False, norm=None, dtype=np.float32)
    return sp.csr_matrix(vectorizer.transform(texts))


def log_probabilities(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """Log probability of each bucket under a bag-of-n-grams model fit on these summed counts (add-`smoothing`)."""
    counts = np.asarray(counts, dtype=np.float64) + smoothing
    return np.log(counts) - np.log(counts.sum())


def log_importance(counts: sp.csr_matrix, target: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Each document's log importance weight: sum over its n-grams of log p_target - log p_raw."""
    return np.asarray(counts @ (target - raw), dtype=np.float64).ravel()


def length_normalized(log_weights: np.ndarray, counts: sp.csr_matrix) -> np.ndarray:
    """Log weights as if every document had the median number of n-grams: mean log ratio per n-gram x that median."""
    ngrams = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    return log_weights / np.maximum(ngrams, 1.0) * float(np.median(ngrams)) if len(ngrams) else log_weights


def importance_resample(log_weights: np.ndarray, lengths: np.ndarray | None, budget: int, unit: BudgetUnit,
                        seed: int) -> np.ndarray:
    """Pool indices drawn without replacement with probability proportional to exp(log_weights), in draw order,
    until the budget is met (Gumbel top-k: sorting log w + Gumbel noise is sequential weighted sampling)."""
    log_weights = np.asarray(log_weights, dtype=np.float64)
    check_budget(len(log_weights), lengths, budget, unit, "dsir")
    keys = log_weights + np.random.default_rng(seed).gumbel(size=len(log_weights))
    return take_budget(np.argsort(-keys, kind="stable"), lengths, budget, unit)
