"""FixMatch's strong augmentation, batched on the training device: RandAugment (random magnitude,
two ops per image) followed by Cutout.

Hand-written because neither library draws FixMatch's policy per image (measured by
`scripts/strong_augment_bench.py`, 448 images, CPU, one thread): kornia.augmentation.auto.RandAugment
picks its two ops once per batch at one global magnitude (448 copies of one image give 2 distinct
outputs; its default list also refuses one-channel images) and torchvision's v2.RandAugment draws one
op and magnitude per call (1 distinct output). Per-image draws from them need a Python loop over the
images: 2.6-3.7 s (kornia) and 0.33-0.55 s (torchvision) per batch, against 13-32 ms here (448
distinct outputs). Both also read the global RNG, so they are reproducible only inside
torch.random.fork_rng seeded from the run's generator; here every random number comes from the
caller's `torch.Generator`, so a run resumes bit-identically.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genexp.errors import GenexpError, check_choice

# (name, low, high): each image's magnitude for the op is uniform on [low, high]. The ranges are the
# FixMatch paper's (Sohn et al. 2020, table 12) as USB's `fixmatch_augment_pool` applies them: the
# enhance factors (brightness, color, contrast, sharpness) are used as PIL's enhance factor directly,
# so in [0.05, 0.95] they only darken / desaturate / flatten / blur, as in the USB numbers we compare
# against; translations are fractions of the image side; shears are the affine's off-diagonal term.
NATURAL_OPS: tuple[tuple[str, float, float], ...] = (
    ("identity", 0.0, 1.0),
    ("autocontrast", 0.0, 1.0),
    ("equalize", 0.0, 1.0),
    ("brightness", 0.05, 0.95),
    ("color", 0.05, 0.95),
    ("contrast", 0.05, 0.95),
    ("sharpness", 0.05, 0.95),
    ("posterize", 4.0, 8.0),        # bits kept: int(magnitude), so 4..7 as in USB
    ("solarize", 0.0, 1.0),         # threshold as a fraction of max_value
    ("rotate", -30.0, 30.0),        # degrees
    ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3),
    ("translate_x", -0.3, 0.3),     # fraction of the width
    ("translate_y", -0.3, 0.3),
)

# Digit-safe set. The FixMatch list has no flip and no invert at all; on top of that, white-on-black
# digits (MNIST, sklearn's 8x8) lose `solarize` (a low threshold inverts the stroke, a mid one hollows
# it out: a polarity change the labelled data never shows, unlike SVHN's mixed polarities) and `color`
# (a no-op on one channel, it would only dilute the draw). Translation is bounded at 0.2 of the side
# because these digits are centred with no surrounding context (MNIST's margin is 4 of 28 pixels; the
# 8x8 digits fill the frame), so 0.3 would push 22 % (MNIST) to 30 % (8x8) of a digit's width out.
# Rotation (<= 30 deg) and shear (<= 0.3) keep the FixMatch bounds, which leave 6 and 9 apart.
DIGIT_OPS: tuple[tuple[str, float, float], ...] = tuple(
    (name, -0.2, 0.2) if name.startswith("translate") else (name, lo, hi)
    for name, lo, hi in NATURAL_OPS if name not in ("solarize", "color"))

OP_SETS: dict[str, tuple[tuple[str, float, float], ...]] = {"natural": NATURAL_OPS, "digits": DIGIT_OPS}
GEOMETRIC = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})


def _grey(x: Tensor) -> Tensor:
    """(B, 1, H, W) luminance (ITU-R 601-2, PIL's "L" conversion) of RGB, the channel itself otherwise."""
    if x.shape[1] == 3:
        return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    return x.mean(1, keepdim=True)


def _levels(x: Tensor, max_value: float) -> Tensor:
    """The 256 integer levels PIL's uint8 ops (posterize, equalize) work on."""
    return (x * (255.0 / max_value)).round().clamp(0, 255)


def _equalize(x: Tensor, max_value: float) -> Tensor:
    """PIL's ImageOps.equalize per image and channel, all at once: 256-bin histograms by scatter_add,
    LUT from the exclusive cumulative count. Integer counts so the result is exact on any device."""
    b, c, h, w = x.shape
    idx = _levels(x, max_value).long().view(b, c, h * w)
    hist = torch.zeros(b, c, 256, dtype=torch.long, device=x.device).scatter_add_(2, idx, torch.ones_like(idx))
    top = idx.amax(2, keepdim=True)                       # the last non-empty bin
    step = (h * w - hist.gather(2, top)) // 255           # PIL: (total - count of last bin) // 255
    cum = hist.cumsum(2) - hist                           # pixels strictly below each level
    lut = ((step // 2 + cum) // step.clamp(min=1)).clamp(max=255)
    out = lut.gather(2, idx).view(b, c, h, w).to(x.dtype) * (max_value / 255.0)
    # step == 0 (a flat or near-flat channel): PIL leaves the channel as it is.
    return torch.where((step == 0).view(b, c, 1, 1), x, out)


def _colour_op(name: str, x: Tensor, m: Tensor, max_value: float) -> Tensor:
    """One non-geometric op on the examples that drew it; m: their magnitudes, (b,)."""
    f = m.view(-1, 1, 1, 1)
    if name == "identity":
        return x
    if name == "brightness":
        return x * f
    if name == "color":
        if x.shape[1] != 3:
            return x
        g = _grey(x)
        return g + f * (x - g)
    if name == "contrast":
        mean = _grey(x).mean((2, 3), keepdim=True)
        return mean + f * (x - mean)
    if name == "sharpness":
        if min(x.shape[-2:]) < 3:
            return x
        # PIL's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 as a separable 3x3 box sum plus
        # 4x the centre: 3-4x faster on CPU than a depthwise conv2d of one channel.
        r = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
        box = r[..., :-2, :] + r[..., 1:-1, :] + r[..., 2:, :]
        # PIL keeps the border pixels of the smoothed image unfiltered.
        degenerate = x.clone()
        degenerate[:, :, 1:-1, 1:-1] = (box + 4 * x[..., 1:-1, 1:-1]) / 13
        return degenerate + f * (x - degenerate)
    if name == "autocontrast":
        lo = x.amin((2, 3), keepdim=True)
        hi = x.amax((2, 3), keepdim=True)
        flat = hi <= lo
        scale = torch.where(flat, torch.ones_like(hi), max_value / (hi - lo).clamp(min=1e-12))
        return (x - torch.where(flat, torch.zeros_like(lo), lo)) * scale
    if name == "equalize":
        return _equalize(x, max_value)
    if name == "posterize":
        # Keep the top `bits` bits of each 8-bit level, as PIL does.
        q = torch.exp2(8.0 - m.floor().clamp(1, 8)).view(-1, 1, 1, 1)
        return (_levels(x, max_value) / q).floor() * q * (max_value / 255.0)
    if name == "solarize":
        return torch.where(x >= f * max_value, max_value - x, x)
    raise AssertionError(f"unknown op {name}")


def _affine_rows(names: list[str], op: Tensor, mag: Tensor, h: int, w: int) -> Tensor:
    """(B, 2, 3) affine_grid matrices (output -> input, normalised coordinates, align_corners=False)
    for the examples whose drawn op is geometric; the identity for the others. The maps are PIL's
    (rotation and shear about the image centre, as torchvision and kornia do, rather than PIL's shear
    about the top-left corner, which would also translate the image by up to 0.3 of its side)."""
    b = op.shape[0]
    a = torch.zeros(b, 2, 3, dtype=mag.dtype, device=mag.device)
    a[:, 0, 0] = 1.0
    a[:, 1, 1] = 1.0
    for k, name in enumerate(names):
        if name not in GEOMETRIC:
            continue
        sel = op == k
        v = mag[sel]
        if name == "rotate":
            t = v * (math.pi / 180.0)
            cos, sin = torch.cos(t), torch.sin(t)
            # Counter-clockwise for v > 0 as PIL's rotate (rows run downwards), in pixel space
            # conjugated by diag(2/W, 2/H) so that non-square images rotate rigidly.
            a[sel, 0, 0], a[sel, 0, 1] = cos, -sin * (h / w)
            a[sel, 1, 0], a[sel, 1, 1] = sin * (w / h), cos
        elif name == "shear_x":
            a[sel, 0, 1] = v * (h / w)
        elif name == "shear_y":
            a[sel, 1, 0] = v * (w / h)
        elif name == "translate_x":
            a[sel, 0, 2] = 2.0 * v        # v of the width = 2v in [-1, 1] coordinates
        elif name == "translate_y":
            a[sel, 1, 2] = 2.0 * v
    return a


def _affine_grid(theta: Tensor, h: int, w: int) -> Tensor:
    """F.affine_grid(theta, (B, C, h, w), align_corners=False) by broadcasting into one buffer: the
    same grid to ~1e-7, 4-6x faster on CPU, where affine_grid's batched matmul (and a torch.stack)
    cost more than the grid_sample itself."""
    b = theta.shape[0]
    xs = ((torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1).view(1, 1, w)
    ys = ((torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1).view(1, h, 1)
    t = theta.view(b, 6, 1, 1).unbind(1)
    grid = torch.empty(b, h, w, 2, device=theta.device, dtype=theta.dtype)
    for j in range(2):
        torch.add(t[3 * j] * xs, t[3 * j + 1] * ys, out=grid[..., j])
        grid[..., j] += t[3 * j + 2]
    return grid


def _cutout(x: Tensor, u: Tensor, frac: float, fill: float) -> Tensor:
    """USB's Cutout: side = U(0, frac) of the image side, centre uniform over the image, the
    square clipped at the borders (so squares near an edge are smaller), filled with `fill`.
    u: (3, B) uniforms on x's device."""
    b, _, h, w = x.shape
    side = u[0] * frac * min(h, w)
    y0 = (u[1] * h - side / 2).clamp(min=0).floor()
    x0 = (u[2] * w - side / 2).clamp(min=0).floor()
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, w)
    in_r = ((rows >= y0.view(b, 1)) & (rows < (y0 + side).view(b, 1))).to(x.dtype)
    in_c = ((cols >= x0.view(b, 1)) & (cols < (x0 + side).view(b, 1))).to(x.dtype)
    mask = in_r.view(b, 1, h, 1) * in_c.view(b, 1, 1, w)
    # A lerp with 0/1 weights (exactly x or fill) rather than masked_fill or where: one pass, and
    # 5-10x faster on CPU than those with a mask broadcast over the channels.
    return torch.lerp(x, torch.tensor(fill, dtype=x.dtype, device=x.device), mask)


def _slot(y: Tensor, names: list[str], op: Tensor, mag: Tensor, max_value: float) -> Tensor:
    """One op per image (op: (B,) indices into `names`, mag: (B,) magnitudes), batched per op;
    the geometric ops of all images share one grid_sample. y is updated in place."""
    h, w = y.shape[-2:]
    geo = torch.zeros_like(op, dtype=torch.bool)
    for k, name in enumerate(names):
        if name in GEOMETRIC:
            geo |= op == k
            continue
        if name == "identity":
            continue
        idx = (op == k).nonzero().squeeze(1)
        if idx.numel():
            y.index_copy_(0, idx, _colour_op(name, y.index_select(0, idx), mag[idx], max_value))
    gidx = geo.nonzero().squeeze(1)
    if gidx.numel():
        theta = _affine_rows(names, op[gidx], mag[gidx], h, w).to(y.dtype)
        moved = F.grid_sample(y.index_select(0, gidx), _affine_grid(theta, h, w), mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        y.index_copy_(0, gidx, moved)
    return y


def apply_op(x: Tensor, name: str, magnitude: Tensor | float, max_value: float = 1.0) -> Tensor:
    """One named op on every image of x, with per-image magnitudes (a scalar or a (B,) tensor), in
    the op's own units (see NATURAL_OPS): for tests and for looking at what an op does."""
    if name not in {n for n, _, _ in NATURAL_OPS}:
        raise ValueError(f"unknown op {name!r}: one of {', '.join(n for n, _, _ in NATURAL_OPS)}")
    mag = torch.as_tensor(magnitude, dtype=torch.float32, device=x.device).expand(x.shape[0])
    op = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    return _slot(x.clone(), [name], op, mag, max_value)


@dataclass
class RandAugmentCutout:
    """FixMatch's strong augmentation A(.) (Sohn et al. 2020, as USB runs it): for each image,
    `n_ops` ops drawn uniformly with replacement from the list, each with its own magnitude drawn
    uniformly from the op's range (the paper's RandAugment variant: no global magnitude M), applied
    in the order drawn, then Cutout of a square of side U(0, `cutout`) of the image side at a
    uniform position, filled with grey (max_value / 2).

    Ops ("natural", FixMatch's 14): identity, autocontrast, equalize, brightness / color / contrast /
    sharpness (enhance factor in [0.05, 0.95]), posterize (4-7 bits), solarize (threshold in
    [0, max_value]), rotate (+-30 deg), shear x/y (+-0.3), translate x/y (+-0.3 of the side).
    "digits": the same without solarize and color, translation +-0.2 (see DIGIT_OPS). No set flips.

    Everything is batched: one pass per (slot, op) over the images that drew it, one grid_sample per
    slot for all the geometric ops; all random numbers are drawn up front from `generator` (on its
    device), a fixed number per batch, so the same generator state gives bit-identical output.
    Geometric ops sample bilinearly with zeros outside the image (PIL's fill; PIL samples nearest).
    """

    max_value: float = 1.0
    ops: str = "natural"
    n_ops: int = 2
    cutout: float = 0.5

    def __post_init__(self) -> None:
        check_choice("strong_ops", self.ops, OP_SETS, group="dataset")
        if int(self.n_ops) != self.n_ops or self.n_ops < 0:
            raise GenexpError(f"dataset.strong_n_ops={self.n_ops} must be a whole number >= 0: "
                              f"set dataset.strong_n_ops=2 (FixMatch) or 0 for Cutout alone")
        if not 0.0 <= self.cutout <= 1.0:
            raise GenexpError(f"dataset.cutout={self.cutout} must be in [0, 1] (a fraction of the image side): "
                              f"set dataset.cutout=0.5 (FixMatch) or 0 for none")
        if not self.max_value > 0:
            raise GenexpError(f"dataset.max_value={self.max_value} must be > 0: the images' range is [0, max_value]")

    @property
    def op_names(self) -> list[str]:
        return [name for name, _, _ in OP_SETS[self.ops]]

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"RandAugmentCutout expects float (B, C, H, W) images, got {x.dtype} {tuple(x.shape)}")
        n_ops = int(self.n_ops)
        if n_ops == 0 and self.cutout == 0:
            return x
        table = OP_SETS[self.ops]
        names = [name for name, _, _ in table]
        b = x.shape[0]
        dev = generator.device if generator is not None else x.device
        # A fixed number of draws per batch, whatever ops come up, so the generator's state after
        # a batch depends only on the batch size (resume lands on the same stream).
        op = torch.randint(0, len(table), (n_ops, b), generator=generator, device=dev).to(x.device)
        u = torch.rand(n_ops + 3, b, generator=generator, device=dev).to(x.device)
        lo = torch.tensor([t[1] for t in table], device=x.device)
        span = torch.tensor([t[2] - t[1] for t in table], device=x.device)
        dtype = x.dtype
        # Half-precision inputs: the level arithmetic of posterize/equalize needs float32.
        y = (x.float() if dtype in (torch.float16, torch.bfloat16) else x).clamp(0, self.max_value)
        for s in range(n_ops):
            y = _slot(y, names, op[s], lo[op[s]] + span[op[s]] * u[s], self.max_value)
        if self.cutout > 0:
            y = _cutout(y, u[n_ops:], float(self.cutout), self.max_value / 2)
        return y.clamp_(0, self.max_value).to(dtype)
