"""Functional regularizers. Each takes `forward`, a callable from an input (or embedding) tensor to logits."""
from genexp.regularizers.adversarial import adversarial_loss, fgm_perturbation, pgd_perturbation
from genexp.regularizers.entropy import entropy_loss
from genexp.regularizers.gradient_penalty import (
    consistency_gradient_penalty,
    input_gradient_penalty,
    param_gradient_penalty,
)
from genexp.regularizers.noise import (
    add_noise,
    hidden_noise,
    noise_consistency_loss,
    noisy_ce,
    smooth_labels,
    weight_noise,
)
from genexp.regularizers.vat import vat_loss, vat_perturbation

__all__ = [
    "add_noise",
    "adversarial_loss",
    "consistency_gradient_penalty",
    "entropy_loss",
    "fgm_perturbation",
    "hidden_noise",
    "input_gradient_penalty",
    "noise_consistency_loss",
    "noisy_ce",
    "param_gradient_penalty",
    "pgd_perturbation",
    "smooth_labels",
    "vat_loss",
    "vat_perturbation",
    "weight_noise",
]
