"""Batched forward/backward of the per-chunk LM loss with hooks on chosen nn.Linear layers.

For a linear map y = W a, the gradient of a chunk's loss L_n with respect to W is Σ_t g_t a_tᵀ, with a_t the layer
input and g_t = ∂L_n/∂y_t at token t. One batched backward gives every chunk's a_t and g_t at once (causal
attention: a chunk's loss never reaches another chunk of the batch), so per-chunk gradients of the chosen layers
are available without one backward per example and without computing any parameter gradient: the model is frozen
and the graph starts at the input embeddings. A consumer turns (a, g) into what it needs (factors, rotated or
projected per-chunk gradients) layer by layer, so no per-example full-model gradient is ever stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from selectflow.influence.model import autocast


class LayerConsumer(Protocol):
    def on_input(self, name: str, a: torch.Tensor, mask: torch.Tensor) -> Any:
        """a: (B, T, d_in) float32 layer input with padding rows zeroed; returns a context for on_grad."""

    def on_grad(self, name: str, context: Any, g: torch.Tensor, mask: torch.Tensor) -> None:
        """g: (B, T, d_out) float32 gradient of Σ_n L_n with respect to the layer output."""


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded
    mask: torch.Tensor  # (B, T) 1 for real tokens

    @classmethod
    def from_chunks(cls, chunks: list[list[int]], device: torch.device, pad_id: int = 0) -> Batch:
        width = max(len(chunk) for chunk in chunks)
        ids = torch.full((len(chunks), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunks), width), dtype=torch.long)
        for row, chunk in enumerate(chunks):
            ids[row, : len(chunk)] = torch.tensor(chunk, dtype=torch.long)
            mask[row, : len(chunk)] = 1
        return cls(ids.to(device), mask.to(device))


def chunk_losses(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-chunk mean next-token cross-entropy (B,), over the chunk's real tokens."""
    targets = input_ids[:, 1:]
    valid = (mask[:, 1:] * mask[:, :-1]).float()
    token_loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    return (token_loss * valid).sum(1) / valid.sum(1).clamp(min=1.0)


def forward_backward(
    model: nn.Module,
    layers: dict[str, nn.Linear],
    batch: Batch,
    consumer: LayerConsumer,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One forward and one backward of Σ_n L_n over the batch, feeding each chosen layer's (a, g) to `consumer`.

    Returns the per-chunk losses (B,). Works for a frozen model (no parameter gradient is computed).
    """
    mask_f = batch.mask.float()
    handles = []

    def forward_hook(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            a = inputs[0].detach().float() * mask_f[..., None]
            with torch.autocast(device_type=a.device.type, enabled=False):  # consumer math stays float32
                context = consumer.on_input(name, a, mask_f)

            def grad_hook(grad: torch.Tensor) -> None:
                consumer.on_grad(name, context, grad.float() * mask_f[..., None], mask_f)

            output.register_hook(grad_hook)

        return hook

    for name, module in layers.items():
        handles.append(module.register_forward_hook(forward_hook(name)))
    try:
        embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
        with autocast(batch.input_ids.device, dtype):
            logits = model(inputs_embeds=embeds, attention_mask=batch.mask, use_cache=False).logits
        losses = chunk_losses(logits, batch.input_ids, batch.mask)
        del logits
        torch.autograd.grad(losses.sum(), embeds)
    finally:
        for handle in handles:
            handle.remove()
    return losses.detach()
