"""Mixture search (RegMix-style): how much of each component (domain or cluster) to train on, found by probing.

1. Proposals: `propose_mixtures` draws weight vectors from a Dirichlet around the pool's natural proportions
   (alpha = concentration x K x natural), every weight at least `floor`.
2. Each proposal is probed: a small byte-level model trains on a sample of the pool resampled to those weights
   (`resample`) and is evaluated on held-out sets (done by the stages, not here).
3. `MixtureRegression` maps weights to held-out bits per byte: ridge regression on the weights ('linear') or on
   the weights and their logs ('log_linear'), or gradient-boosted trees ('boosting').
   `cross_validated` predicts each mixture from a fit on the others: its Spearman with the measured bpb says
   whether the regression can rank mixtures it has not seen.
4. `best_mixture` scores many candidate mixtures, drawn like the proposals and within the range the probed ones
   cover, with the fit and averages the best ones (RegMix's top-k average: it stays inside the floors). A fit that
   predicts the same loss everywhere has no preference: the natural proportions are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import spearmanr

from selectflow.select.baselines import BudgetUnit, take_budget
from selectflow.select.strata import stratum_quotas

Regression = Literal["linear", "log_linear", "boosting"]
_FLAT = 1e-9  # predictions spread less than this (bits per byte): the fit has no preference


def natural_weights(components: np.ndarray, sizes: np.ndarray, k: int) -> np.ndarray:
    """Each component's share of the pool, counted in `sizes` (bytes or documents per document)."""
    held = np.bincount(components, weights=sizes, minlength=k).astype(np.float64)
    if held.sum() <= 0:
        raise ValueError("mixture: the pool holds nothing to mix")
    return held / held.sum()


def with_floor(weights: np.ndarray, floor: float) -> np.ndarray:
    """Weights on the simplex moved so that each is at least `floor` (still on the simplex)."""
    k = np.shape(weights)[-1]
    if floor * k >= 1.0:
        raise ValueError(f"mixture: a floor of {floor} per component leaves nothing to choose with {k} components; "
                         f"lower floor below {1.0 / k:.4f}")
    return floor + (1.0 - k * floor) * np.asarray(weights, dtype=np.float64)


def propose_mixtures(natural: np.ndarray, n: int, concentration: float, floor: float, seed: int) -> np.ndarray:
    """`n` seeded mixtures (rows on the simplex, every weight >= floor) drawn around the natural proportions."""
    k = len(natural)
    alpha = concentration * k * np.maximum(natural, 1e-3)
    return with_floor(np.random.default_rng(seed).dirichlet(alpha, size=n), floor)


def _features(weights: np.ndarray, kind: Regression) -> np.ndarray:
    weights = np.atleast_2d(weights)
    if kind != "log_linear":
        return weights
    return np.hstack([weights, np.log(np.maximum(weights, 1e-6))])  # logs: diminishing returns of more of a domain


@dataclass
class MixtureRegression:
    """Held-out bits per byte as a function of the mixture weights."""

    kind: Regression = "linear"
    seed: int = 0

    def fit(self, weights: np.ndarray, losses: np.ndarray) -> MixtureRegression:
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.kind in ("linear", "log_linear"):
            self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        else:
            self.model = GradientBoostingRegressor(n_estimators=200, max_depth=2, learning_rate=0.05, subsample=0.8,
                                                   random_state=self.seed)
        self.model.fit(_features(weights, self.kind), np.asarray(losses, dtype=np.float64))
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        return self.model.predict(_features(weights, self.kind))


def cross_validated(weights: np.ndarray, losses: np.ndarray, kind: Regression, folds: int = 5,
                    seed: int = 0) -> tuple[np.ndarray, float]:
    """Each mixture's loss predicted by a fit on the other folds, and the Spearman correlation of those predictions
    with the measured losses (nan when either is constant)."""
    n = len(losses)
    folds = max(2, min(folds, n))
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    predicted = np.empty(n)
    for fold in range(folds):
        test = fold_of == fold
        predicted[test] = MixtureRegression(kind, seed).fit(weights[~test], losses[~test]).predict(weights[test])
    if np.ptp(predicted) < _FLAT or np.ptp(losses) == 0:
        return predicted, float("nan")
    return predicted, float(spearmanr(predicted, losses)[0])


def best_mixture(model: MixtureRegression, natural: np.ndarray, floor: float, probed: np.ndarray,
                 concentration: float = 1.0, candidates: int = 100_000, top: int = 100,
                 seed: int = 0) -> tuple[np.ndarray, bool]:
    """The mean of the `top` candidate mixtures with the lowest predicted loss, and whether the fit preferred any
    (False: every candidate was predicted the same, and the natural proportions, floored, are returned).

    Candidates are drawn like the proposals (`propose_mixtures`, as RegMix does) and kept only inside the range of
    weights the `probed` mixtures covered, component by component: the fit is trusted only where it has seen
    mixtures. Unbounded, the optimum of a fit on 24 mixtures of the sample sat at licences 0.50-0.55, where no probe
    had gone above 0.12, and measured worse than the natural mixture."""
    probed = np.atleast_2d(probed)
    pool = propose_mixtures(natural, candidates, concentration, floor, seed)
    inside = np.all((pool >= probed.min(axis=0)) & (pool <= probed.max(axis=0)), axis=1)
    pool = pool[inside] if inside.sum() >= top else np.vstack([pool[inside], probed])  # the probed are inside
    predicted = model.predict(pool)
    if np.ptp(predicted) < _FLAT:
        return with_floor(natural, floor), False
    return pool[np.argsort(predicted, kind="stable")[:top]].mean(axis=0), True


def component_quotas(held: np.ndarray, weights: np.ndarray, budget: int) -> np.ndarray:
    """Each component's share of `budget` (in the units of `held`), in proportion to `weights`, none above what it
    holds (what a full component cannot take goes to the others)."""
    return stratum_quotas(held, budget, "reference", target=np.asarray(weights, dtype=np.float64))


def resample(components: np.ndarray, lengths: np.ndarray | None, weights: np.ndarray, budget: int, unit: BudgetUnit,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool positions of a seeded sample whose components follow `weights` under the budget: each component's quota
    (`component_quotas`) filled with its documents in a seeded random order, the last one not cut. Returns the
    positions (in a seeded random order) and the quotas."""
    k = len(weights)
    sizes = np.ones(len(components), np.int64) if unit == "docs" else np.asarray(lengths, np.int64)
    quotas = component_quotas(np.bincount(components, weights=sizes, minlength=k).astype(np.int64), weights, budget)
    rng = np.random.default_rng(seed)
    picked = [take_budget(rng.permutation(np.flatnonzero(components == c)), sizes, int(quotas[c]), unit)
              for c in range(k)]
    order = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    return order[rng.permutation(len(order))], quotas
