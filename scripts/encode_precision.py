"""Where the frozen-text encoding's time goes, and what a lower precision would buy.

Encodes the first N training tweets with the shipped MiniLM in float32 (genexp's default; also
with eager attention instead of scaled_dot_product_attention), with
bfloat16 weights, under bf16 autocast and with int8 dynamic quantisation of the linear layers;
prints each one's texts/s, its features' distance from float32's, and the floor that the linear
layers' FLOPs put under a float32 encoding of all 23,140 tweets at the measured matmul rate.

    HF_HUB_OFFLINE=1 python scripts/encode_precision.py --texts 1500 --threads 2
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's start/stop lines

import torch  # noqa: E402


def linear_flops_per_token(hidden: int, intermediate: int, layers: int) -> int:
    # q, k, v, o projections and the two feed-forward matrices; 2 FLOPs per multiply-add
    return layers * (4 * hidden * hidden + 2 * hidden * intermediate) * 2


def padded_tokens(lengths: list[int], batch_size: int) -> int:
    """Tokens the encoder computes: texts sorted by length, each batch padded to its longest."""
    ordered = sorted(lengths, reverse=True)
    return sum(ordered[i] * len(ordered[i:i + batch_size]) for i in range(0, len(ordered), batch_size))


def main() -> None:
    from transformers import AutoTokenizer

    from genexp.data.features import encode_texts
    from genexp.data.pretrained import load_pretrained, resolve_name_or_path
    from genexp.data.tweets import load_tweets

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=1500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")

    data = load_tweets()
    every = data.x_train + data.x_test
    texts = data.x_train[:a.texts]
    tokenizer = AutoTokenizer.from_pretrained(resolve_name_or_path("minilm"))

    def lengths(xs: list[str]) -> list[int]:
        return [len(i) for i in tokenizer(xs, truncation=True, max_length=128)["input_ids"]]

    def encoder(attention: str | None = None) -> torch.nn.Module:
        return load_pretrained("encoder", "minilm", attn_implementation=attention)

    cfg = encoder().config
    per_token = linear_flops_per_token(cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers)
    probe_flops = padded_tokens(lengths(texts), a.batch_size) * per_token
    all_flops = padded_tokens(lengths(every), a.batch_size) * per_token

    def timed(model: torch.nn.Module, autocast: bool = False) -> tuple[float, torch.Tensor, float]:
        from torch.profiler import ProfilerActivity, profile

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            encode_texts(texts[:a.batch_size], model, tokenizer, max_length=128, batch_size=a.batch_size)
            start = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                feats = encode_texts(texts, model, tokenizer, max_length=128, batch_size=a.batch_size)
            seconds = time.perf_counter() - start
        matmul = sum(e.self_cpu_time_total for e in prof.key_averages()
                     if e.key in ("aten::addmm", "aten::mm", "aten::linear", "quantized::linear_dynamic")) / 1e6
        return seconds, feats, matmul

    print(f"{len(texts)} tweets, {a.threads} threads, batches of {a.batch_size}; "
          f"linear layers: {per_token / 1e6:.1f} MFLOP per token, {all_flops / 1e12:.1f} TFLOP for all {len(every)} tweets")
    ref = None
    quantize = torch.ao.quantization.quantize_dynamic
    for name, model, autocast in (("float32", encoder(), False), ("float32 eager", encoder("eager"), False),
                                  ("bf16 weights", encoder().to(torch.bfloat16), False),
                                  ("bf16 autocast", encoder(), True),
                                  ("int8 dynamic", quantize(encoder(), {torch.nn.Linear}, dtype=torch.qint8), False)):
        seconds, feats, matmul = timed(model, autocast)
        line = f"{name:14s} {len(texts) / seconds:6.0f} texts/s  matmul {matmul / seconds:4.0%} of the time"
        if ref is None:
            ref, rate = feats, probe_flops / matmul
            line += (f" at {rate / 1e9:.0f} GFLOP/s: all tweets' linear layers alone {all_flops / rate:.0f} s, "
                     f"the whole encoding about {len(every) / (len(texts) / seconds):.0f} s")
        else:
            cos = torch.nn.functional.cosine_similarity(feats.float(), ref).min().item()
            line += f"  vs float32: max |diff| {(feats.float() - ref).abs().max().item():.1e}, min cosine {cos:.4f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
