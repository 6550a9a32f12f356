"""Which strong augmentation for FixMatch/UDA/FlexMatch: genexp's hand-written RandAugmentCutout,
kornia.augmentation.auto.RandAugment, or torchvision.transforms.v2.RandAugment?

For a batch of 448 MNIST-sized (1, 28, 28) and 448 CIFAR-sized (3, 32, 32) images on CPU with one
thread, prints per candidate:
  ms/batch     best and median of the repeats (the best is the one least disturbed by other work on
               a shared machine; both are printed so the spread shows);
  per-sample   how many distinct outputs 448 copies of ONE image give (median of 5 calls): FixMatch
               draws two ops and their magnitudes per image, so a per-sample policy gives hundreds,
               a per-batch one a few;
  generator    whether the same torch.Generator state gives bit-identical output (kornia and
               torchvision read the global RNG: they get it through torch.random.fork_rng seeded
               with a number drawn from our generator, which is how genexp would have to call them).

    python scripts/strong_augment_bench.py [--reps 20] [--batch 448]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from genexp.data.randaugment import RandAugmentCutout

Aug = Callable[[Tensor, torch.Generator], Tensor]


def forked(fn: Callable[[Tensor], Tensor]) -> Aug:
    """A global-RNG augmentation made generator-driven: one seed from our generator, the global RNG
    forked around the call so the rest of the program's random stream is untouched."""
    def call(x: Tensor, g: torch.Generator) -> Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return fn(x)
    return call


def per_image(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Per-sample parameters from a per-call transform: one call per image."""
    return lambda x: torch.stack([fn(xi.unsqueeze(0)).squeeze(0) for xi in x])


def timed(aug: Aug, x: Tensor, reps: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    aug(x, g)                                     # warm-up: allocations, lazy init
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        aug(x, g)
        ts.append(time.perf_counter() - t)
    return 1e3 * min(ts), 1e3 * statistics.median(ts)


def distinct_outputs(aug: Aug, x: Tensor, calls: int = 5) -> int:
    """Median over a few calls: one call of a per-batch policy can still vary per image (a random
    sign per image in kornia), so a single call can mislead either way."""
    same = x[:1].expand_as(x).contiguous()
    g = torch.Generator().manual_seed(1)
    return int(statistics.median(len(torch.unique(aug(same, g).flatten(1), dim=0)) for _ in range(calls)))


def reproducible(aug: Aug, x: Tensor) -> bool:
    a = aug(x, torch.Generator().manual_seed(2))
    torch.rand(7)                                 # global RNG moved on in between: must not matter
    b = aug(x, torch.Generator().manual_seed(2))
    return torch.equal(a, b)


def candidates(channels: int) -> dict[str, tuple[Aug, int]]:
    """name -> (augmentation, repeats divisor: per-image loops are timed on fewer repeats)."""
    from kornia.augmentation.auto import RandAugment as KorniaRandAugment
    from kornia.augmentation.auto.rand_augment.rand_augment import default_policy
    from torchvision.transforms import v2

    ops = "natural" if channels == 3 else "digits"
    # kornia's default policy has `color`, which refuses one channel: drop it for MNIST.
    policy = default_policy if channels == 3 else [p for p in default_policy if p[0][0] != "color"]
    kornia = KorniaRandAugment(n=2, m=10, policy=policy)
    tv = v2.RandAugment(num_ops=2)
    return {
        f"genexp RandAugmentCutout ({ops}, cutout 0.5)": (RandAugmentCutout(ops=ops), 1),
        f"genexp RandAugmentCutout ({ops}, no cutout)": (RandAugmentCutout(ops=ops, cutout=0.0), 1),
        "kornia auto.RandAugment(n=2, m=10), one call": (forked(kornia), 1),
        "kornia auto.RandAugment, loop over images": (forked(per_image(kornia)), 10),
        "torchvision v2.RandAugment(num_ops=2), one call": (forked(tv), 1),
        "torchvision v2.RandAugment, loop over images": (forked(per_image(tv)), 10),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=448)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, batch {args.batch}; ms/batch best / median")
    for shape in ((1, 28, 28), (3, 32, 32)):
        x = torch.rand(args.batch, *shape, generator=torch.Generator().manual_seed(3))
        print(f"\n{args.batch} x {shape}")
        print(f"  {'candidate':52s} {'best':>8s} {'median':>8s}  {'distinct/' + str(args.batch):>13s}  generator")
        for name, (aug, div) in candidates(shape[0]).items():
            best, med = timed(aug, x, max(2, args.reps // div))
            print(f"  {name:52s} {best:8.1f} {med:8.1f}  {distinct_outputs(aug, x):13d}  "
                  f"{'bit-identical' if reproducible(aug, x) else 'NOT reproducible'}")


if __name__ == "__main__":
    main()
