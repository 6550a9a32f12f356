"""Weak-to-strong consistency: a target from the weakly augmented view, a loss on the strong one
(FixMatch, Sohn et al. 2020; UDA, Xie et al. 2020; FlexMatch, Zhang et al. 2021). MATH.md has the
objectives; ../shared/reference/SSL-BASELINES.md the published defaults.

Every mean is over the whole unlabelled batch (masked examples count as 0), as in the papers and
USB, not over the examples that passed. Targets and masks are taken without gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genexp.regularizers.divergence import ce, kl_from_logits
from genexp.regularizers.precision import widen


def confidence(logits_weak: Tensor) -> tuple[Tensor, Tensor]:
    """(max_c q_c, argmax_c q_c) of q = softmax(logits_weak), without gradient."""
    with torch.no_grad():
        return F.softmax(widen(logits_weak), dim=-1).max(dim=-1)


def hard_pseudo_label_loss(logits_strong: Tensor, pseudo: Tensor, mask: Tensor) -> Tensor:
    """(1/B) Σ_b mask_b · CE(logits_strong_b, pseudo_b)."""
    return (ce(logits_strong, pseudo, reduction="none") * mask).mean()


def fixmatch_loss(logits_weak: Tensor, logits_strong: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """FixMatch's unlabelled term and its 0/1 mask: (1/B) Σ_b 1[max q_b ≥ τ] · CE(A(u_b), argmax q_b)."""
    conf, pseudo = confidence(logits_weak)
    mask = (conf >= threshold).to(torch.float32)
    return hard_pseudo_label_loss(logits_strong, pseudo, mask), mask


def uda_loss(logits_weak: Tensor, logits_strong: Tensor, temperature: float,
             threshold: float) -> tuple[Tensor, Tensor]:
    """UDA's unlabelled term and its mask: (1/B) Σ_b 1[max q_b ≥ β] · KL(sharpen(q_b, T) ‖ p(A(u_b))),
    sharpen(q, T) = q^{1/T} / Σ_k q_k^{1/T} = softmax(logits_weak / T), without gradient.
    USB writes it as the cross-entropy H(sharpen(q), p): the same gradient, larger by the target's
    entropy; KL is 0 when the strong view agrees with the target."""
    conf, _ = confidence(logits_weak)
    mask = (conf >= threshold).to(torch.float32)
    kl = kl_from_logits(widen(logits_weak).detach() / temperature, logits_strong, reduction="none")
    return (kl * mask).mean(), mask


def convex_warp(x: Tensor) -> Tensor:
    """FlexMatch's mapping M(x) = x / (2 − x) of a class's learning effect to its threshold factor."""
    return x / (2.0 - x)


def learning_effect(sigma: Tensor, num_unlabelled: int) -> Tensor:
    """β(c) = σ(c) / max(max_k σ(k), N − Σ_k σ(k)), σ(c) = #unlabelled examples whose latest confident
    prediction is c (`class_counts`; N − Σσ never yet confident: the warm-up term). Left at its last
    value by the caller when one bucket holds every example (USB's update rule)."""
    return sigma / largest_bucket(sigma, num_unlabelled).clamp_min(1.0)


def largest_bucket(sigma: Tensor, num_unlabelled: int) -> Tensor:
    """max(max_k σ(k), N − Σ_k σ(k)): the most examples one class, or 'none yet', holds."""
    return torch.maximum(sigma.max(), float(num_unlabelled) - sigma.sum())


def class_counts(latest: Tensor, num_classes: int) -> Tensor:
    """σ(c) for c < num_classes from labels in {−1, 0, …}: a scatter, so no device synchronisation."""
    ones = torch.ones_like(latest, dtype=torch.float32)
    counts = torch.zeros(num_classes + 1, device=latest.device).scatter_add_(0, latest + 1, ones)
    return counts[1:]


def flexmatch_mask(logits_weak: Tensor, threshold: float, effect: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mask, pseudo, confident): mask = 1[max q_b ≥ M(β(ŷ_b)) · τ], ŷ = argmax q; `confident` =
    1[max q_b ≥ τ], the examples whose latest prediction FlexMatch records."""
    conf, pseudo = confidence(logits_weak)
    mask = (conf >= threshold * convex_warp(effect[pseudo])).to(torch.float32)
    return mask, pseudo, conf >= threshold
