"""CNN-13 ("Conv-Large"): the 13-layer network of Laine & Aila 2017 and Miyato et al. 2018 (Table 6).

    3×(conv 3×3, 128) → max-pool 2×2 → dropout 0.5 → 3×(conv 3×3, 256) → max-pool → dropout
    → conv 3×3 valid, 512 → conv 1×1, 256 → conv 1×1, 128 → global average pool → linear

Every convolution is followed by BatchNorm and LeakyReLU(0.1), as in Miyato et al.'s code
(takerum/vat_tf cnn.py, whose BatchNorm decay 0.99 is `bn_momentum: 0.01` here). Works for any
(C, H, W) input and class count: stages whose input is too small to pool are not pooled, and the
"valid" 3×3 convolution is padded when the map is smaller than 3×3 (e.g. 8×8 digits).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from genexp.errors import GenexpError
from genexp.models.base import GenexpModel


def image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:  # (H, W) grayscale
        shape = (1, *shape)
    if len(shape) != 3:
        raise GenexpError(f"model={model} needs image inputs (C, H, W), got shape {shape}: use model=mlp")
    return shape  # type: ignore[return-value]


class _ToImage(nn.Module):
    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


class CNN13(GenexpModel):
    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (128, 256, 512, 256, 128),
                 dropout: float = 0.5, lrelu: float = 0.1, bn_momentum: float = 0.01, bn_eps: float = 1e-5,
                 top_bn: bool = False) -> None:
        super().__init__()
        c, h, w = image_shape(input_shape, "cnn13")
        if len(widths) != 5:
            raise GenexpError(f"model.widths={list(widths)} needs 5 numbers (stage 1, stage 2, 3×3 valid, 1×1, 1×1): "
                              f"the default is [128, 256, 512, 256, 128]")
        w1, w2, w3, w4, w5 = (int(v) for v in widths)

        def conv(c_in: int, c_out: int, k: int, pad: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, k, padding=pad, bias=False),
                    nn.BatchNorm2d(c_out, eps=bn_eps, momentum=bn_momentum), nn.LeakyReLU(lrelu)]

        layers: list[nn.Module] = [_ToImage((c, h, w))]
        for width in (w1, w2):
            layers += conv(c, width, 3, 1) + conv(width, width, 3, 1) + conv(width, width, 3, 1)
            c = width
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            layers.append(nn.Dropout(dropout))
        valid = 0 if min(h, w) >= 3 else 1
        layers += conv(c, w3, 3, valid) + conv(w3, w4, 1, 0) + conv(w4, w5, 1, 0)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w5, num_classes)]
        if top_bn:
            layers.append(nn.BatchNorm1d(num_classes, eps=bn_eps, momentum=bn_momentum))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # tf variance_scaling_initializer (He, fan-in), as in Miyato et al.'s code.
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(h)
