"""The model contract: a perturbable representation (`embed`) and a classifier on top (`head`).

Regularizers perturb whatever `embed` returns: the input itself for vector and image models,
the token-embedding output for text models (with `mask` marking real tokens), so every method
works on every model without knowing which it has.
"""
from __future__ import annotations

from torch import Tensor, nn


class GenexpModel(nn.Module):
    def embed(self, x: Tensor) -> Tensor:
        """The representation perturbations act on. Identity (as float) unless overridden."""
        return x.float() if not x.is_floating_point() else x

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def perturb_mask(self, mask: Tensor | None) -> Tensor | None:
        """Mask broadcastable to `embed`'s output (1 = may be perturbed), or None for no mask."""
        return None if mask is None else mask.unsqueeze(-1).float()

    def embedding_layer(self) -> nn.Embedding | None:
        """The token-embedding table of text models (for the embedding-matrix VAT variant)."""
        return None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.head(self.embed(x), mask)
