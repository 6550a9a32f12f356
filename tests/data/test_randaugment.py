"""genexp.data.randaugment: FixMatch's strong augmentation (RandAugment + Cutout), batched and
driven by the caller's generator. The ops are checked against PIL, the library FixMatch's and
USB's RandAugment are written with."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from genexp.data.randaugment import DIGIT_OPS, NATURAL_OPS, RandAugmentCutout, apply_op
from genexp.errors import GenexpError

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def images(n: int, shape: tuple[int, ...], seed: int = 0, max_value: float = 1.0) -> torch.Tensor:
    """Images on the 256 levels of uint8 data, as the datasets deliver them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).float() * (max_value / 255)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ops", ["natural", "digits"])
def test_same_generator_state_gives_bit_identical_output_and_another_seed_differs(shape, ops):
    x = images(32, shape)
    aug = RandAugmentCutout(ops=ops)
    a, b = aug(x, gen(7)), aug(x, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, gen(8)))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_only_the_generator_is_read_and_it_advances_by_a_fixed_amount():
    """The global RNG is neither read nor moved; after a call the generator's state depends on the
    batch size alone (not on which ops were drawn), so a resumed run continues on the same stream."""
    x = images(16, (1, 28, 28))
    aug = RandAugmentCutout(ops="digits")
    torch.manual_seed(0)
    state = torch.get_rng_state()
    g1, g2 = gen(3), gen(3)
    aug(x, g1)
    aug(images(16, (1, 28, 28), seed=1), g2)        # other pixels, so other op outcomes
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(g1.get_state(), g2.get_state())
    torch.manual_seed(123)                          # the global RNG moved: output must not change
    assert torch.equal(aug(x, gen(3)), aug(x, gen(3)))


@pytest.mark.parametrize("shape", SHAPES)
def test_each_image_draws_its_own_ops_magnitudes_and_cutout(shape):
    x = images(1, shape).expand(64, *shape).contiguous()
    y = RandAugmentCutout(ops="natural" if shape[0] == 3 else "digits")(x, gen(0))
    distinct = len(torch.unique(y.flatten(1), dim=0))
    assert distinct >= 60, f"64 copies of one image gave only {distinct} distinct outputs"


def test_an_image_s_output_does_not_depend_on_the_other_images_in_the_batch():
    """Per-image statistics (contrast's mean, autocontrast's range, equalize's histogram) must not
    leak across the batch: changing image 0 leaves every other image's output as it was."""
    x = images(8, (3, 32, 32))
    x2 = x.clone()
    x2[0] = images(1, (3, 32, 32), seed=9)[0]
    for name, lo, hi in NATURAL_OPS:
        mag = lo + (hi - lo) * torch.rand(8, generator=gen(1))
        a, b = apply_op(x, name, mag), apply_op(x2, name, mag)
        assert torch.equal(a[1:], b[1:]), name
    aug = RandAugmentCutout(n_ops=3)
    a, b = aug(x, gen(5)), aug(x2, gen(5))
    assert torch.equal(a[1:], b[1:]) and not torch.equal(a[0], b[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_float_dtypes_and_a_255_range(dtype):
    x = images(16, (3, 32, 32), max_value=255.0).to(dtype)
    y = RandAugmentCutout(max_value=255.0)(x, gen(0))
    assert y.dtype == dtype and y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 255.0 and not torch.equal(x, y)


def test_no_ops_and_no_cutout_is_the_identity_and_cutout_alone_is_one_grey_square():
    x = images(16, (1, 28, 28))
    assert torch.equal(RandAugmentCutout(n_ops=0, cutout=0.0)(x, gen(0)), x)
    y = RandAugmentCutout(n_ops=0, cutout=0.5, max_value=1.0)(x, gen(0))
    changed = y != x
    assert torch.all(y[changed] == 0.5)
    cut = (y == 0.5) & ((x != 0.5) | changed)
    for m in cut[:, 0]:
        rows, cols = m.any(1).nonzero().squeeze(1), m.any(0).nonzero().squeeze(1)
        if rows.numel():
            # A square (clipped at the borders), never longer than half the side.
            assert rows.numel() <= 14 and cols.numel() <= 14
            assert bool(m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all())


def test_the_op_lists_are_fixmatch_s_and_the_digit_set_has_no_flip_or_inversion():
    names = [n for n, _, _ in NATURAL_OPS]
    assert len(names) == 14 and set(names) == {
        "identity", "autocontrast", "equalize", "brightness", "color", "contrast", "sharpness", "posterize",
        "solarize", "rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
    digits = {n: (lo, hi) for n, lo, hi in DIGIT_OPS}
    assert not any(w in n for n in digits for w in ("flip", "mirror", "invert", "solarize"))
    assert max(abs(v) for v in digits["rotate"]) <= 30 and max(abs(v) for v in digits["shear_x"]) <= 0.3


@pytest.mark.parametrize("ops", ["natural", "digits"])
def test_no_draw_mirrors_an_asymmetric_pattern(ops):
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 4:24, 6:10] = 1.0                       # an "L" far from symmetric
    x[0, 0, 20:24, 6:20] = 1.0
    x = x.expand(256, 1, 28, 28).contiguous()
    y = RandAugmentCutout(ops=ops, cutout=0.0)(x, gen(0))
    mirror = x.flip(-1)
    assert not any(torch.allclose(yi, mirror[0], atol=0.05) for yi in y)


def test_an_unknown_op_set_is_one_line_naming_the_setting():
    with pytest.raises(GenexpError) as e:
        RandAugmentCutout(ops="imagenet")
    msg = str(e.value)
    assert "dataset.strong_ops" in msg and "natural" in msg and "digits" in msg and "\n" not in msg
    with pytest.raises(GenexpError, match="dataset.strong_n_ops"):
        RandAugmentCutout(n_ops=-1)
    with pytest.raises(GenexpError, match="dataset.cutout"):
        RandAugmentCutout(cutout=1.5)


# --- each op against PIL (what FixMatch and USB call), on uint8-valued images -------------------

def pil(x: torch.Tensor) -> Image.Image:
    a = (x * 255).round().to(torch.uint8)
    return Image.fromarray(a[0].numpy(), "L") if a.shape[0] == 1 else Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB")


def tensor(img: Image.Image) -> torch.Tensor:
    a = torch.from_numpy(np.asarray(img).copy()).float() / 255
    return a.unsqueeze(0) if a.dim() == 2 else a.permute(2, 0, 1)


CASES = [  # (op, magnitude, PIL reference, tolerance in levels: PIL rounds its uint8 intermediates,
    # and contrast's grey mean, to whole levels)
    ("equalize", 0.0, ImageOps.equalize, 0),
    ("posterize", 5.7, lambda im: ImageOps.posterize(im, 5), 0),
    ("solarize", 100.5 / 255, lambda im: ImageOps.solarize(im, 101), 0),
    ("autocontrast", 0.0, ImageOps.autocontrast, 1),
    ("brightness", 0.3, lambda im: ImageEnhance.Brightness(im).enhance(0.3), 1),
    ("contrast", 0.4, lambda im: ImageEnhance.Contrast(im).enhance(0.4), 1.5),
    ("color", 0.2, lambda im: ImageEnhance.Color(im).enhance(0.2), 1.5),
    ("sharpness", 0.1, lambda im: ImageEnhance.Sharpness(im).enhance(0.1), 1.5),
    ("rotate", 90.0, lambda im: im.rotate(90), 0),
    ("translate_x", 0.25, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0.25 * im.size[0], 0, 1, 0)), 0),
    ("translate_y", -0.25, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, -0.25 * im.size[1])), 0),
]


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize("name,mag,ref,tol", CASES, ids=[c[0] for c in CASES])
def test_op_matches_pil(shape, name, mag, ref, tol):
    # Images with narrow, differing ranges so that autocontrast and equalize have work to do.
    x = images(4, shape, seed=1) * torch.tensor([0.3, 0.5, 0.8, 1.0]).view(4, 1, 1, 1) + 0.05 * torch.arange(4).view(4, 1, 1, 1)
    x = (x.clamp(0, 1) * 255).round() / 255
    y = apply_op(x, name, mag)
    want = torch.stack([tensor(ref(pil(xi))) for xi in x])
    assert (y - want).abs().max() * 255 <= tol + 1e-3, f"{name}: max error {(y - want).abs().max() * 255:.2f} levels"


def test_ops_take_a_magnitude_per_image():
    x = images(3, (1, 8, 8))
    y = apply_op(x, "brightness", torch.tensor([0.1, 0.5, 0.9]))
    for i, f in enumerate((0.1, 0.5, 0.9)):
        assert torch.allclose(y[i], x[i] * f)


@pytest.mark.gpu
def test_on_cuda_the_same_cuda_generator_state_gives_bit_identical_output():
    x = images(64, (3, 32, 32)).cuda()
    aug = RandAugmentCutout()
    g = torch.Generator(device="cuda")
    a = aug(x, g.manual_seed(4))
    b = aug(x, g.manual_seed(4))
    assert a.is_cuda and torch.equal(a, b) and not torch.equal(a, aug(x, g.manual_seed(5)))
