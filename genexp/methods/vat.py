"""`vat`: cross-entropy + α·KL(p(x) ‖ p(x + r_adv)) on unlabelled data (MATH.md §4).

With `entmin_weight` > 0 this is VAT+EntMin (Miyato et al. 2018, §4): the clean unlabelled
forward then keeps its graph and also carries the entropy term.

Amortised VAT (`warm_start=true`, genexp's own extension, not in the published
implementations): each training example's last adversarial direction is kept in a buffer on the
device and the next power iteration starts from it instead of from N(0, I). With
`refresh_every=k` the power iteration runs only every k-th step; in between the stored direction
is reused as is (0 power iterations), which removes the 2u-unit power pass from those steps.
"""
from __future__ import annotations

import torch
from torch import Tensor

from genexp.methods.base import Batch, Method, StepOutput
from genexp.models.base import GenexpModel
from genexp.regularizers._common import couples_batch, frozen_bn_stats, kl_from_logits
from genexp.regularizers.entropy import entropy_loss
from genexp.regularizers.rng_replay import RngReplay
from genexp.regularizers.vat import check_xi, vat_loss, vat_perturbation

BUFFER_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class VAT(Method):
    uses_unlabeled = True

    def __init__(self, eps: float = 1.0, xi: float | str = "auto", power_iters: int = 1, weight: float = 1.0,
                 include_labeled: bool = False, entmin_weight: float = 0.0, label_smoothing: float = 0.0,
                 warm_start: bool = False, refresh_every: int = 1, buffer_dtype: str = "bfloat16",
                 shared_noise: bool = True) -> None:
        super().__init__(weight=weight, label_smoothing=label_smoothing)
        self.check(eps=eps, power_iters=power_iters, entmin_weight=entmin_weight)
        check_xi(xi)  # a bad method.xi fails before training starts
        if int(refresh_every) < 1:
            from genexp.errors import GenexpError
            raise GenexpError(f"method.refresh_every={refresh_every} must be >= 1: set method.refresh_every=1 (every step)")
        self.eps, self.xi, self.power_iters = eps, xi, int(power_iters)
        self.include_labeled, self.entmin_weight = include_labeled, entmin_weight
        self.warm_start, self.refresh_every = bool(warm_start), int(refresh_every)
        self.buffer_dtype = BUFFER_DTYPES[buffer_dtype]
        self.shared_noise = bool(shared_noise)
        self.directions: Tensor | None = None  # (num_train, *embed shape), unit norm per row
        self.seen: Tensor | None = None
        self.num_train = 0

    def setup(self, model: GenexpModel, *, num_classes: int, num_train: int, device: torch.device) -> None:
        self.num_train = num_train

    def _stored(self, idx: Tensor, like: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.directions is None:
            self.directions = torch.zeros((self.num_train, *like.shape[1:]), dtype=self.buffer_dtype,
                                          device=like.device)
            self.seen = torch.zeros(self.num_train, dtype=torch.bool, device=like.device)
        init = self.directions[idx].to(like.dtype)
        # Examples never seen start from a fresh Gaussian direction, as in standard VAT.
        fresh = torch.randn(like.shape, device=like.device, dtype=like.dtype, generator=generator)
        return torch.where(self.seen[idx].view(-1, *([1] * (like.dim() - 1))), init, fresh)

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        x_u, mask_u, idx = batch.x_u, batch.mask_u, batch.idx_u
        if self.include_labeled:
            x_u = torch.cat([batch.x_l, x_u])
            mask_u = None if mask_u is None else torch.cat([batch.mask_l, mask_u])
            idx = None if idx is None else torch.cat([batch.idx_l, idx])
        h = model.embed(x_u)

        def forward(z: torch.Tensor) -> torch.Tensor:
            return model.head(z, mask_u)

        # One clean forward serves the VAT target and the entropy term; it keeps a graph only
        # when the entropy term needs one, and never moves BatchNorm statistics.
        replay = RngReplay(h.device) if self.shared_noise else None
        with frozen_bn_stats(model), torch.set_grad_enabled(self.entmin_weight > 0):
            logits_u = forward(h)
        target = logits_u.detach()
        pmask = model.perturb_mask(mask_u)
        if self.warm_start and idx is not None:
            iters = self.power_iters if batch.step % self.refresh_every == 0 else 0
            r_adv = vat_perturbation(forward, h, xi=self.xi, eps=self.eps, power_iters=iters,
                                     generator=batch.generator, target_logits=target, mask=pmask,
                                     init=self._stored(idx, h.detach(), batch.generator), model=model,
                                     replay=replay)
            self.directions[idx] = (r_adv.detach() / self.eps).to(self.buffer_dtype)
            self.seen[idx] = True
        else:
            r_adv = vat_perturbation(forward, h, xi=self.xi, eps=self.eps, power_iters=self.power_iters,
                                     generator=batch.generator, target_logits=target, mask=pmask, model=model,
                                     replay=replay)
        if fusable(model, batch):
            # Labelled and adversarial inputs share one forward/backward: same outputs and gradients
            # as two passes (no BatchNorm couples the rows), fewer kernel calls.
            h_l = model.embed(batch.x_l)
            logits = model.head(torch.cat([h_l, h + r_adv.detach()]))
            logits_l, logits_adv = logits.split([len(h_l), len(h)])
            sup, reg = self.cross_entropy(logits_l, batch.y_l), kl_from_logits(target, logits_adv)
        else:
            sup, logits_l = self.supervised(model, batch)
            reg = vat_loss(forward, h, xi=self.xi, eps=self.eps, target_logits=target, model=model, r_adv=r_adv)
        total = sup + self.weight * reg
        logs = {"sup": sup.detach(), "vat": reg.detach()}
        if self.entmin_weight > 0:
            ent = entropy_loss(logits_u)
            total = total + self.entmin_weight * ent
            logs["entropy"] = ent.detach()
        return StepOutput(loss=total, logits_l=logits_l, logs=logs)

    def state_dict(self) -> dict:
        return {} if self.directions is None else {"directions": self.directions, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.directions, self.seen = state["directions"], state["seen"]


def fusable(model: GenexpModel, batch: Batch) -> bool:
    """Whether the labelled batch joins the adversarial one in a single forward pass.

    Only for unmasked inputs: on the CPU, A/B in one process, sharing the pass made the digits
    MLP's VAT step 5-7 % faster but the packed-sequence BiLSTM's 38 % and MiniLM's 9 % slower
    (tweets, 32+32 and 16+16), so padded text keeps two passes.
    """
    return batch.mask_l is None and batch.mask_u is None and not couples_batch(model) \
        and batch.x_l.shape[1:] == batch.x_u.shape[1:]
