"""Data-parallel training under torchrun: gloo on CPU, nccl on GPU.

Gradients are averaged with one flattened all-reduce per step instead of wrapping the model in
DistributedDataParallel: methods run several forwards per step through `embed`/`head` (power
iterations, teachers), which DDP's forward-bound reducer does not expect.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> Dist:
    return Dist(rank=int(os.environ.get("RANK", 0)), world=int(os.environ.get("WORLD_SIZE", 1)))


def init(device_type: str) -> Dist:
    d = world_from_env()
    if d.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return d


def local_device() -> torch.device:
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def average_gradients(params: list[nn.Parameter], d: Dist) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not d.enabled or not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= d.world
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def average_buffers(model: nn.Module, d: Dist) -> None:
    """Average floating buffers (BatchNorm running statistics) so every rank evaluates one model."""
    if not d.enabled:
        return
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= d.world


def all_sum(t: Tensor, d: Dist) -> Tensor:
    if d.enabled:
        t = t.clone()
        dist.all_reduce(t)
    return t


def broadcast_object(obj: object, d: Dist) -> object:
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
