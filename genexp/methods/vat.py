"""`vat`: cross-entropy + α·KL(p(x) ‖ p(x + r_adv)) on unlabelled data (MATH.md §4).

One step, top to bottom in this file and then in genexp/regularizers/vat.py (steps 1-4 there):
`loss` runs the supervised pass and `regularizer` (the frozen-BatchNorm rule of `Method.loss`),
or, when no BatchNorm couples the rows (`fusable`), both in one forward pass. `_direction` takes
the unlabelled view h = model.embed(x_u), captures the random state (`RngReplay`, so the probe
passes see the clean pass's dropout masks), makes the clean pass, and runs the power iteration
(`KLTarget`, `vat_direction`); the adversarial pass is `perturbed(h, d, eps)` and its term
`target.kl`. `vat_loss` in regularizers/vat.py is the same step for a plain forward.

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

from genexp.errors import GenexpError
from genexp.methods.base import Batch, LabelledPass, Method, StepOutput
from genexp.methods.views import View, clean_logits, unlabelled_view
from genexp.models.base import GenexpModel
from genexp.models.batchnorm import couples_batch
from genexp.models.layers import draws_random
from genexp.regularizers.entropy import entropy_loss
from genexp.regularizers.graph import detached
from genexp.regularizers.rng_replay import RngReplay
from genexp.regularizers.vat import KLTarget, check_xi, gaussian_start, perturbed, vat_direction

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
            raise GenexpError(f"method.refresh_every={refresh_every} must be >= 1: set method.refresh_every=1 (every step)")
        self.eps, self.xi, self.power_iters = eps, xi, int(power_iters)
        self.include_labeled, self.entmin_weight = include_labeled, entmin_weight
        self.warm_start, self.refresh_every = bool(warm_start), int(refresh_every)
        self.buffer_dtype = BUFFER_DTYPES[buffer_dtype]
        self.shared_noise = bool(shared_noise)
        self.directions: Tensor | None = None  # (num_train, *embed shape), unit norm per row
        self.seen: Tensor | None = None
        self.num_train = 0

    def setup(self, model: GenexpModel, *, num_classes: int, num_train: int, device: torch.device,
              num_unlabeled: int | None = None) -> None:
        self.num_train = num_train

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        if not fusable(model, batch):
            return super().loss(model, batch)
        # Labelled and adversarial inputs share one forward/backward: same outputs and gradients
        # as two passes (no BatchNorm couples the rows, so there is nothing to freeze either).
        v, logits_u, target, d = self._direction(model, batch)
        h_l = model.embed(batch.x_l)
        logits = model.head(torch.cat([h_l, perturbed(v.h, d, self.eps)]))
        logits_l, logits_adv = logits.split([len(h_l), len(v.h)])
        sup = self.cross_entropy(logits_l, batch.y_l)
        terms, logs = self._terms(logits_u, target.kl(logits_adv))
        total = sup
        for term in terms:
            total = total + term
        return StepOutput(loss=total, logits_l=logits_l, logs={"sup": sup.detach(), **logs})

    def regularizer(self, model: GenexpModel, batch: Batch,
                    labelled: LabelledPass) -> tuple[list[Tensor], dict[str, Tensor]]:
        v, logits_u, target, d = self._direction(model, batch)
        return self._terms(logits_u, target.kl(v.forward(perturbed(v.h, d, self.eps))))  # steps 3-4

    def _direction(self, model: GenexpModel, batch: Batch) -> tuple[View, Tensor, KLTarget, Tensor]:
        """The unlabelled view, its clean logits, the KL target p(x) and r_adv's unit direction.
        One clean forward serves the VAT target and the entropy term; it keeps a graph only when
        the entropy term needs one."""
        v = unlabelled_view(model, batch, self.include_labeled)
        # before the clean pass it replays; a model that draws nothing in its forward has nothing to replay
        replay = RngReplay(v.h.device) if self.shared_noise and draws_random(model) else None
        logits_u = clean_logits(v, keep_graph=self.entmin_weight > 0)
        target = KLTarget(logits_u)  # step 1; step 2 below, from N(0, I) or from the stored direction
        kwargs = dict(xi=self.xi, target=target, generator=batch.generator, mask=v.pmask, replay=replay)
        if self.warm_start and batch.idx_u is not None:
            idx = torch.cat([batch.idx_l, batch.idx_u]) if self.include_labeled else batch.idx_u
            iters = self.power_iters if batch.step % self.refresh_every == 0 else 0
            d = vat_direction(v.forward, v.h, power_iters=iters,
                              init=self._stored(idx, detached(v.h), batch.generator), **kwargs)
            self.directions[idx] = d.to(self.buffer_dtype)
            self.seen[idx] = True
        else:
            d = vat_direction(v.forward, v.h, power_iters=self.power_iters, noise=batch.noise_u, **kwargs)
        return v, logits_u, target, d

    def _stored(self, idx: Tensor, like: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.directions is None:
            self.directions = torch.zeros((self.num_train, *like.shape[1:]), dtype=self.buffer_dtype,
                                          device=like.device)
            self.seen = torch.zeros(self.num_train, dtype=torch.bool, device=like.device)
        init = self.directions[idx].to(like.dtype)
        # Examples never seen start from a fresh Gaussian direction, as in standard VAT.
        fresh = torch.randn(like.shape, device=like.device, dtype=like.dtype, generator=generator)
        return torch.where(self.seen[idx].view(-1, *([1] * (like.dim() - 1))), init, fresh)

    def compiles(self, model: GenexpModel, batch: Batch) -> bool:
        """Inputs the model perturbs as given (no token embedding, no mask), no per-example buffer
        (warm_start), no random draws in the forward to replay: then the step is one graph."""
        return (type(model).embed is GenexpModel.embed and batch.mask_l is None and batch.mask_u is None
                and not self.warm_start and not (self.shared_noise and draws_random(model)))

    def draw(self, model: GenexpModel, batch: Batch) -> Batch:
        """The power iteration's Gaussian start, drawn from the batch's generator as the eager step draws it."""
        out = super().draw(model, batch)
        x_u = torch.cat([batch.x_l, batch.x_u]) if self.include_labeled else batch.x_u
        out.noise_u = gaussian_start(model.embed(x_u), batch.generator)
        return out

    def _terms(self, logits_u: Tensor, reg: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        terms, logs = [reg if self.weight == 1 else self.weight * reg], {"vat": reg.detach()}
        if self.entmin_weight > 0:
            ent = entropy_loss(logits_u)
            terms.append(self.entmin_weight * ent)
            logs["entropy"] = ent.detach()
        return terms, logs

    def state_dict(self) -> dict:
        return {} if self.directions is None else {"directions": self.directions, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.directions, self.seen = state["directions"], state["seen"]


def fusable(model: GenexpModel, batch: Batch) -> bool:
    """Whether the labelled batch joins the adversarial one in a single forward pass.

    Only for unmasked inputs: one larger pass saves kernel calls on small dense models, but a
    packed-sequence or trimmed-padding text model pays for the longest row of the joint batch,
    so padded text keeps two passes.
    """
    return batch.mask_l is None and batch.mask_u is None and not couples_batch(model) \
        and batch.x_l.shape[1:] == batch.x_u.shape[1:]
