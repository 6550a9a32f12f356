"""A small convolutional network for small images (digits 8×8, CIFAR-sized 32×32)."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from genexp.models.base import GenexpModel


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.1))


class SmallCNN(GenexpModel):
    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (32, 64),
                 dropout: float = 0.0) -> None:
        super().__init__()
        if len(input_shape) != 3:
            from genexp.errors import GenexpError
            raise GenexpError(f"model=cnn needs image inputs (C, H, W), got shape {tuple(input_shape)}: use model=mlp")
        blocks: list[nn.Module] = []
        c = input_shape[0]
        for i, width in enumerate(channels):
            blocks += [conv_bn(c, width), conv_bn(width, width)]
            if i < len(channels) - 1:
                blocks.append(nn.MaxPool2d(2))
            c = width
        blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes)]
        self.net = nn.Sequential(*blocks)

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(h)
