"""Multilayer perceptron on flattened inputs."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from genexp.errors import check_choice
from genexp.models.base import GenexpModel

INITS = ("torch", "normal_fan_in")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "softplus": nn.Softplus}


class GaussianNoise(nn.Module):
    """Adds N(0, std²) noise in training mode only: the hidden-layer noise of Salimans et al. 2016
    that Miyato et al. 2018 add to their MNIST MLP (a regulariser of the model, like dropout)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.std * torch.randn_like(x) if self.training else x


class MLP(GenexpModel):
    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (256, 256),
                 activation: str = "relu", batchnorm: bool = False, dropout: float = 0.0,
                 hidden_noise: float = 0.0, noise_before_activation: bool = False,
                 output_batchnorm: bool = False, weight_init: str = "torch") -> None:
        super().__init__()
        check_choice("weight_init", weight_init, INITS, group="model")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for w in widths:
            layers.append(nn.Linear(width, w))
            if batchnorm:
                layers.append(nn.BatchNorm1d(w))
            if hidden_noise > 0 and noise_before_activation:
                layers.append(GaussianNoise(hidden_noise))
            layers.append(ACTIVATIONS[activation]())
            if hidden_noise > 0 and not noise_before_activation:
                layers.append(GaussianNoise(hidden_noise))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = w
        layers.append(nn.Linear(width, num_classes))
        if output_batchnorm:
            # Miyato et al.'s MNIST MLP normalises the logits too (BatchNorm after every linear
            # layer, the last included): it bounds how far ε-sized input moves reach the softmax.
            layers.append(nn.BatchNorm1d(num_classes))
        self.net = nn.Sequential(*layers)
        if weight_init == "normal_fan_in":
            for m in self.net:
                if isinstance(m, nn.Linear):
                    # N(0, 1/fan_in), zero bias: Miyato et al.'s Linear layer (github.com/takerum/vat
                    # source/theano/layers/linear.py). Under BatchNorm the weight scale sets Adam's
                    # effective step (lr / ‖W‖): PyTorch's uniform init is √3 narrower.
                    nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.in_features))
                    nn.init.zeros_(m.bias)

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(h)
