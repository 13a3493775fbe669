"""Kronecker-factored random projections of per-chunk layer gradients.

A layer's per-chunk gradient G = Σ_t g_t a_tᵀ (d_out × d_in) is projected to P_g G P_aᵀ = Σ_t (P_g g_t)(P_a a_t)ᵀ
(k × k), computed from the projected hook tensors without ever forming G. P_a, P_g are seeded Rademacher matrices
scaled by 1/√k, so E[PᵀP] = I and ⟨P_g X P_aᵀ, P_g Y P_aᵀ⟩ is an unbiased estimate of ⟨X, Y⟩. A side whose width
is ≤ k is not projected (identity), which makes small layers exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def rademacher(rows: int, cols: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (rows, cols), generator=generator, dtype=torch.int8)
    return (signs.float() * 2 - 1) / rows**0.5


@dataclass
class KroneckerProjection:
    p_a: torch.Tensor | None  # (k_a, d_in) or None: identity
    p_g: torch.Tensor | None  # (k_g, d_out) or None: identity

    @classmethod
    def seeded(cls, d_in: int, d_out: int, dim: int, seed: int) -> KroneckerProjection:
        p_a = rademacher(dim, d_in, seed * 2) if d_in > dim else None
        p_g = rademacher(dim, d_out, seed * 2 + 1) if d_out > dim else None
        return cls(p_a, p_g)

    def project_inputs(self, a: torch.Tensor) -> torch.Tensor:
        return a if self.p_a is None else a @ self.p_a.T

    def project_grads(self, g: torch.Tensor) -> torch.Tensor:
        return g if self.p_g is None else g @ self.p_g.T

    def project_matrix(self, v: torch.Tensor) -> torch.Tensor:
        """P_g V P_aᵀ for gradient-shaped (…, d_out, d_in) V."""
        if self.p_g is not None:
            v = self.p_g @ v
        if self.p_a is not None:
            v = v @ self.p_a.T
        return v

    def to(self, device: torch.device) -> KroneckerProjection:
        move = lambda m: None if m is None else m.to(device)  # noqa: E731
        return KroneckerProjection(move(self.p_a), move(self.p_g))
