"""Per-example gradients by plain autograd: the reference that the batched hooks are checked and benchmarked against."""

from __future__ import annotations

import torch
from torch import nn

from selectflow.influence.capture import chunk_losses
from selectflow.influence.model import autocast


def layer_gradients(
    model: nn.Module,
    layers: dict[str, nn.Linear],
    chunk: list[int],
    dtype: torch.dtype = torch.float32,
    full_backward: bool = False,
) -> dict[str, torch.Tensor]:
    """∂L/∂W (d_out × d_in, float32) of one chunk's mean next-token loss for each chosen layer, batch size 1.

    full_backward=True does what a training-style per-example loop does (LESS): every parameter requires grad and
    `loss.backward()` fills all of them; otherwise only the chosen weights are differentiated.
    """
    device = next(model.parameters()).device
    ids = torch.tensor([chunk], device=device)
    mask = torch.ones_like(ids)
    params = list(model.parameters()) if full_backward else [layer.weight for layer in layers.values()]
    for parameter in params:
        parameter.requires_grad_(True)
    try:
        with autocast(device, dtype):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        loss = chunk_losses(logits, ids, mask)[0]
        if full_backward:
            model.zero_grad(set_to_none=True)
            loss.backward()
            grads = {name: layer.weight.grad.float().clone() for name, layer in layers.items()}
            model.zero_grad(set_to_none=True)
        else:
            weights = torch.autograd.grad(loss, [layer.weight for layer in layers.values()])
            grads = {name: grad.float() for name, grad in zip(layers, weights)}
    finally:
        for parameter in params:
            parameter.requires_grad_(False)
    return grads
