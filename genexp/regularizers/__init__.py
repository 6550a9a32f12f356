"""Functional regularizers: the math genexp's methods compose (MATH.md; the rule is in
genexp.methods.base). Each takes `forward`, a callable from an input (or embedding) tensor to logits."""
from genexp.regularizers.adversarial import adversarial_loss, fgm_perturbation, pgd_perturbation
from genexp.regularizers.consistency import ema_update, softmax_mse
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
    noisy_logits,
    smooth_labels,
    weight_noise,
    weight_noise_loss,
)
from genexp.regularizers.pseudo_label import pseudo_label_loss
from genexp.regularizers.vat import KLTarget, matrix_vat_perturbation, perturbed, vat_direction, vat_loss, vat_perturbation

__all__ = [
    "KLTarget",
    "add_noise",
    "adversarial_loss",
    "consistency_gradient_penalty",
    "ema_update",
    "entropy_loss",
    "fgm_perturbation",
    "hidden_noise",
    "input_gradient_penalty",
    "matrix_vat_perturbation",
    "noise_consistency_loss",
    "noisy_ce",
    "noisy_logits",
    "param_gradient_penalty",
    "perturbed",
    "pgd_perturbation",
    "pseudo_label_loss",
    "smooth_labels",
    "softmax_mse",
    "vat_direction",
    "vat_loss",
    "vat_perturbation",
    "weight_noise",
    "weight_noise_loss",
]
