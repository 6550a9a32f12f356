"""WRN-28-2: the Wide ResNet of Oliver et al. 2018 ("Realistic evaluation of deep SSL").

Follows brain-research/realistic-ssl-evaluation lib/networks.py: a 3×3 conv to 16 channels, three
groups of `(depth - 4) / 6` pre-activation residual units with 16·k, 32·k, 64·k channels
(strides 1, 2, 2; k = `width`), BatchNorm → LeakyReLU(0.1) before each conv (the first unit
activates before the shortcut split, "activate_before_residual"), 1×1 conv shortcuts where the
width changes, then BN → LeakyReLU → global average pool → linear. BatchNorm decay 0.999 and
epsilon 1e-3 as in TensorFlow's batch_norm (PyTorch momentum 0.001). Convs have no bias and are
initialised N(0, 2/(k²·out)); the linear layer is Glorot-normal.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from genexp.errors import GenexpError
from genexp.models.base import GenexpModel
from genexp.models.cnn13 import _ToImage, image_shape


class _Unit(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, activate_before_residual: bool, lrelu: float,
                 bn_momentum: float, bn_eps: float) -> None:
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.bn1 = nn.BatchNorm2d(c_in, eps=bn_eps, momentum=bn_momentum)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.act = nn.LeakyReLU(lrelu)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        if self.activate_before_residual:
            x = self.act(self.bn1(x))
            orig = x
        else:
            orig = x
            x = self.act(self.bn1(x))
        x = self.conv1(x)
        x = self.conv2(self.act(self.bn2(x)))
        if self.shortcut is not None:
            orig = self.shortcut(orig)
        elif orig.shape != x.shape:  # same width but strided: cannot happen in WRN-28-k
            raise RuntimeError("stride without a width change")
        return x + orig


class WideResNet(GenexpModel):
    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 28, width: int = 2,
                 lrelu: float = 0.1, bn_momentum: float = 0.001, bn_eps: float = 1e-3) -> None:
        super().__init__()
        c, h, w = image_shape(input_shape, "wrn28_2")
        if depth < 10 or (depth - 4) % 6:
            raise GenexpError(f"model.depth={depth} must be 6n+4 (e.g. 28): set model.depth=28")
        if width < 1:
            raise GenexpError(f"model.width={width} must be >= 1: set model.width=2")
        n = (depth - 4) // 6
        filters = [16, 16 * width, 32 * width, 64 * width]
        layers: list[nn.Module] = [_ToImage((c, h, w)), nn.Conv2d(c, filters[0], 3, 1, padding=1, bias=False)]
        for g, (stride, abr) in enumerate(((1, True), (2, False), (2, False))):
            for i in range(n):
                layers.append(_Unit(filters[g] if i == 0 else filters[g + 1], filters[g + 1], stride if i == 0 else 1,
                                    abr and i == 0, lrelu, bn_momentum, bn_eps))
        layers += [nn.BatchNorm2d(filters[3], eps=bn_eps, momentum=bn_momentum), nn.LeakyReLU(lrelu),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(filters[3], num_classes)]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # N(0, 2/(k²·out))
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.net(h)
