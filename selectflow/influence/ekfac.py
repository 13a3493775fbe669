"""EK-FAC curvature of linear layers and its damped inverse.

For a linear layer with per-chunk gradient G_n = Σ_t g_t a_tᵀ (d_out × d_in), the curvature is the empirical
Fisher F = E_n[vec(G_n) vec(G_n)ᵀ] (Gauss-Newton with the observed next tokens), approximated block-diagonally
(one block per layer) as

    K-FAC:   F ≈ A ⊗ S,  A = E_t[a_t a_tᵀ],  S = E_t[g_t g_tᵀ],  A = Q_A diag(·) Q_Aᵀ,  S = Q_S diag(·) Q_Sᵀ
    EK-FAC:  keep the eigenbasis Q_S ⊗ Q_A but replace the Kronecker eigenvalues by the exact second moments of the
             gradients in that basis, Λ_ij = E_n[(Q_Sᵀ G_n Q_A)_ij²]  (George et al. 2018).

Damped inverse-Hessian-vector product of a d_out × d_in matrix V, with λ = damping · mean(Λ):

    H⁻¹ V = Q_S [ (Q_Sᵀ V Q_A) ⊘ (Λ + λ) ] Q_Aᵀ

(⊘: element-wise division). The released QUAD code multiplies by (Λ + λ) here; that is the forward product H V,
not the inverse. mean(Λ) = tr(F) / (d_out d_in) because a rotation keeps the trace, so `damping` is relative to the
average curvature of the layer and means the same for every layer and model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def rotated_gradients(a: torch.Tensor, g: torch.Tensor, q_a: torch.Tensor, q_s: torch.Tensor) -> torch.Tensor:
    """Q_Sᵀ G_n Q_A for every chunk n of the batch, from a (B,T,d_in) and g (B,T,d_out): (B, d_out, d_in)."""
    return torch.bmm((g @ q_s).transpose(1, 2), a @ q_a)


@dataclass
class LayerCurvature:
    q_a: torch.Tensor  # (d_in, d_in) eigenvectors of A (columns)
    q_s: torch.Tensor  # (d_out, d_out) eigenvectors of S
    eigenvalues: torch.Tensor  # (d_out, d_in) corrected eigenvalues Λ
    damping: float  # absolute λ = relative damping · mean(Λ)

    def inverse_rotated(self, rotated: torch.Tensor) -> torch.Tensor:
        """(Q_Sᵀ V Q_A) ⊘ (Λ + λ): the iHVP still in the eigenbasis (batched over leading dims)."""
        return rotated / (self.eigenvalues + self.damping)

    def ihvp(self, v: torch.Tensor) -> torch.Tensor:
        """H⁻¹ V for a (…, d_out, d_in) gradient-shaped V."""
        return self.q_s @ self.inverse_rotated(self.q_s.T @ v @ self.q_a) @ self.q_a.T

    def to(self, device: torch.device) -> LayerCurvature:
        return LayerCurvature(self.q_a.to(device), self.q_s.to(device), self.eigenvalues.to(device), self.damping)


@dataclass
class FactorAccumulator:
    """Pass 1 consumer: token second moments A and S per layer."""

    a_moments: dict[str, torch.Tensor] = field(default_factory=dict)
    s_moments: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)

    def on_input(self, name: str, a: torch.Tensor, mask: torch.Tensor) -> Any:
        flat = a.reshape(-1, a.shape[-1])
        self.a_moments[name] = self.a_moments.get(name, 0) + flat.T @ flat
        self.tokens[name] = self.tokens.get(name, 0.0) + float(mask.sum())
        return None

    def on_grad(self, name: str, context: Any, g: torch.Tensor, mask: torch.Tensor) -> None:
        flat = g.reshape(-1, g.shape[-1])
        self.s_moments[name] = self.s_moments.get(name, 0) + flat.T @ flat

    def eigenbases(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(Q_A, Q_S) per layer, from float64 eigendecompositions of the averaged factors."""
        bases = {}
        for name, a_sum in self.a_moments.items():
            count = max(self.tokens[name], 1.0)
            _, q_a = torch.linalg.eigh((a_sum / count).double())
            _, q_s = torch.linalg.eigh((self.s_moments[name] / count).double())
            bases[name] = (q_a.float(), q_s.float())
        return bases


@dataclass
class EigenvalueAccumulator:
    """Pass 2 consumer: Λ_ij = E_n[(Q_Sᵀ G_n Q_A)_ij²] in each layer's K-FAC eigenbasis."""

    bases: dict[str, tuple[torch.Tensor, torch.Tensor]]
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=dict)

    def on_input(self, name: str, a: torch.Tensor, mask: torch.Tensor) -> Any:
        return a

    def on_grad(self, name: str, context: Any, g: torch.Tensor, mask: torch.Tensor) -> None:
        q_a, q_s = self.bases[name]
        rotated = rotated_gradients(context, g, q_a, q_s)
        self.sums[name] = self.sums.get(name, 0) + rotated.square().sum(0)
        self.chunks[name] = self.chunks.get(name, 0) + rotated.shape[0]

    def curvature(self, damping: float) -> dict[str, LayerCurvature]:
        result = {}
        for name, (q_a, q_s) in self.bases.items():
            eigenvalues = self.sums[name] / self.chunks[name]
            # a layer whose gradients are all zero has mean 0: keep λ > 0 so the division stays finite
            result[name] = LayerCurvature(q_a, q_s, eigenvalues, damping * max(float(eigenvalues.mean()), 1e-30))
        return result
