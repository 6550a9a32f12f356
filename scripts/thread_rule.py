"""The benchmark behind `cpu_threads=auto`'s rule (genexp/train/threads.py): a VAT step at one
thread and at every core, interleaved in one process, for models of growing step size.

    python scripts/thread_rule.py                      # the table in docs/RESULTS.md
    python scripts/thread_rule.py --iters 20 model=mlp model.widths=[512,512]   # one setting of your own
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from genexp.command.bench import MethodTimer, compose
from genexp.train.build import build_method
from genexp.train.setup import prepare, setup_run
from genexp.train.threads import MIN_FLOPS_FOR_THREADS, usable_cores

SETTINGS = [
    ["dataset=digits", "model=mlp"],  # the default run
    ["dataset=digits", "model=mlp", "model.widths=[256,256]"],
    ["dataset=digits", "model=mlp", "model.widths=[512,512]"],
    ["dataset=digits", "model=mlp", "model.widths=[1024,1024]"],
    ["experiment=mnist_labels"],
    ["dataset=random", "model=cnn", "batch_size=32", "unlabeled_batch_size=32"],
]


def time_setting(overrides: list[str], iters: int, cores: int) -> dict:
    cfg = compose(["method=vat", "cpu_threads=1", *overrides])
    device = prepare(cfg)
    run = setup_run(cfg, device)
    timer = MethodTimer(run.model, build_method(cfg), cfg, run.source, run.source.next(0, True), device, run.amp)
    times: dict[int, list[float]] = {1: [], cores: []}
    for n in times:
        torch.set_num_threads(n)
        timer.run(3, with_data=False, record=False)
    for _ in range(max(1, iters // 5)):
        for n in times:  # interleaved: the machine's noise hits both alike
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            timer.run(5, with_data=False, record=False)
            times[n].append((time.perf_counter() - t0) / 5 * 1000)
    one, many = statistics.median(times[1]), statistics.median(times[cores])
    return {"setting": " ".join(overrides), "step_flops": run.step_flops, "one": one, "many": many}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--iters", type=int, default=40)
    args = p.parse_args()
    cores = usable_cores()
    print(f"{cores} cores; rule: {cores} threads from {MIN_FLOPS_FOR_THREADS:.0e} forward FLOPs per step")
    print("| setting | forward FLOPs / step | 1 thread ms | %d threads ms | 1 ÷ %d |" % (cores, cores))
    print("|---|---|---|---|---|")
    for overrides in [args.overrides] if args.overrides else SETTINGS:
        r = time_setting(overrides, args.iters, cores)
        print(f"| {r['setting']} | {r['step_flops']:.2g} | {r['one']:.2f} | {r['many']:.2f} | {r['one'] / r['many']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
