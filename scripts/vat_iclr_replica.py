"""An independent replica of Miyato et al.'s ICLR-2016 semi-supervised MNIST graph, to check genexp's VAT.

    python scripts/vat_iclr_replica.py                     # the ICLR README command: 784-1200-1200-10, eps 0.3, xi 1e-6
    python scripts/vat_iclr_replica.py --steps 6000 --decay-steps 150 --affine 0

Plain PyTorch written from github.com/takerum/vat (train_mnist_semisup.py, fnn_mnist_semisup.py,
source/costs/virtual_adversarial_training_finite_diff.py, adversarial_training.py,
layers/batch_normalization.py, linear.py), sharing nothing with genexp but the data loader:
BatchNorm (learned scale and shift, eps 1e-6) after every linear layer including the logits,
N(0, 1/fan_in) weights, 100 labelled (10 per class) + 250 unlabelled images per update, the
unlabelled set holding the labelled images, 1,000 validation images, Adam 2e-3 x 0.9 every
`--decay-steps` updates (theirs: 500), the power iteration at xi on the max-then-L2-normalised
Gaussian with train-mode batch statistics that are not stored, the loss
CE(labelled) + CE(p(x_u), p(x_u + r_adv)), and BatchNorm statistics re-estimated on the
unlabelled set before each evaluation (their 'finetune batch stat'). Prints one JSON line per
evaluation: validation and official-test accuracy (%), the last step's losses and the mean
entropy of p(x_u) in nats.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genexp.data.mnist import load_mnist


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="784-1200-1200-10")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--xi", type=float, default=1e-6)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--decay-steps", type=int, default=150)
    p.add_argument("--affine", type=int, default=1, help="0: BatchNorm without scale/shift, as some public ports")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


class Net(nn.Module):
    def __init__(self, sizes: list[int], affine: bool) -> None:
        super().__init__()
        self.lin = nn.ModuleList(nn.Linear(m, n) for m, n in zip(sizes[:-1], sizes[1:]))
        self.bn = nn.ModuleList(nn.BatchNorm1d(n, eps=1e-6, affine=affine) for n in sizes[1:])
        for layer in self.lin:
            nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(layer.in_features))
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, update_stats: bool = True) -> Tensor:
        h = x
        for i, (lin, bn) in enumerate(zip(self.lin, self.bn)):
            h = lin(h)
            if self.training and not update_stats:
                h = F.batch_norm(h, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
            else:
                h = bn(h)
            if i < len(self.lin) - 1:
                h = F.relu(h)
        return h


def normalized(v: Tensor) -> Tensor:
    """Their get_normalized_vector: divide by the max |v| per row, then by the L2 norm."""
    v = v / (1e-20 + v.abs().amax(1, keepdim=True))
    return v / torch.sqrt(1e-6 + (v ** 2).sum(1, keepdim=True))


def main() -> None:
    a = parse()
    torch.manual_seed(a.seed)
    rng = np.random.RandomState(a.seed)
    data = load_mnist()
    x = data.preprocess(data.x_train).reshape(-1, 784)
    y = data.y_train
    x_test, y_test = data.preprocess(data.x_test).reshape(-1, 784), data.y_test
    perm = rng.permutation(len(x))
    lab = np.concatenate([perm[(y[perm] == c).numpy()][:10] for c in range(10)])
    rest = np.setdiff1d(perm, lab)
    rest = rest[rng.permutation(len(rest))]
    val, ul = rest[:1000], np.concatenate([lab, rest[1000:]])
    net = Net([int(s) for s in a.sizes.split("-")], bool(a.affine))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, a.decay_steps, 0.9)

    def evaluate() -> tuple[float, float]:
        m = Net([int(s) for s in a.sizes.split("-")], bool(a.affine))
        m.load_state_dict(net.state_dict())
        for bn in m.bn:
            bn.reset_running_stats()
            bn.momentum = None
        with torch.no_grad():
            idx = ul[np.random.RandomState(1).permutation(len(ul))]
            m.train()
            for i in range(0, len(idx) - 249, 250):
                m(x[idx[i:i + 250]])
            m.eval()
            return tuple(100 * (m(xx).argmax(1) == yy).double().mean().item()
                         for xx, yy in ((x[val], y[val]), (x_test, y_test)))

    order, pos, t0 = rng.permutation(len(ul)), 0, time.time()
    for step in range(1, a.steps + 1):
        if pos + 250 > len(ul):
            order, pos = rng.permutation(len(ul)), 0
        xl, yl, xu = x[lab], y[lab], x[ul[order[pos:pos + 250]]]
        pos += 250
        net.train()
        sup = F.cross_entropy(net(xl), yl)
        with torch.no_grad():
            p = F.softmax(net(xu, update_stats=False), 1)
        d = (a.xi * normalized(torch.randn_like(xu))).requires_grad_()
        probe = -(p * F.log_softmax(net(xu + d, update_stats=False), 1)).sum(1).mean()
        r_adv = a.eps * normalized(torch.autograd.grad(probe, d)[0] / a.xi)
        vat = -(p * F.log_softmax(net(xu + r_adv, update_stats=False), 1)).sum(1).mean()
        opt.zero_grad()
        (sup + vat).backward()
        opt.step()
        sched.step()
        if step % a.eval_every == 0:
            v, t = evaluate()
            entropy = -(p * p.clamp_min(1e-30).log()).sum(1).mean().item()
            print(json.dumps({"step": step, "val": round(v, 2), "test": round(t, 2), "sup": round(sup.item(), 4),
                              "vat_ce": round(vat.item(), 4), "entropy_u": round(entropy, 4),
                              "s": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
