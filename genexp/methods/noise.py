"""`noise`: supervised cross-entropy on noisy copies of the labelled batch (MATH.md §1).

Objective: (1/k) Σ_{j≤k} CE(f_{ε_j}(x), y), a k-sample estimate of E_ε l(f_ε(x), y), where the
noise ε_j acts on
- `location=input`: the perturbable representation `model.embed(x)` (the input for image and
  vector models, the token embeddings for text models, padding left untouched); additive
  Gaussian x + σ·ε (`kind=gaussian`) or multiplicative x·b/p, b ~ Bernoulli(p)
  (`kind=bernoulli`, dropout-like) or x·2u, u ~ U[0, 1] (`kind=uniform`);
- `location=hidden`: the output of every activation module, h + σ·ε (Gaussian only);
- `location=weights`: every parameter, θ + σ·ε (Gaussian only); the gradient is taken at the
  noisy point, i.e. it is the gradient of E_ε l(θ + ε).
`label_smoothing` s adds label noise (MATH.md §1: uniform label replacement with probability s
has expectation CE against (1 − s)·onehot + s/C). There is no clean term: the noisy loss IS the
objective. The training accuracy the trainer logs is that of the first noisy draw.
"""
from __future__ import annotations

import torch

from genexp.errors import GenexpError, check_choice
from genexp.methods.base import Batch, Method, StepOutput, check_positive_int
from genexp.methods.views import view
from genexp.models.base import GenexpModel
from genexp.regularizers.noise import DEFAULT_ACTIVATIONS, hidden_noise, noisy_logits, weight_noise_loss
from genexp.regularizers.tiling import repeat_batch

KINDS = ("gaussian", "bernoulli", "uniform")
LOCATIONS = ("input", "hidden", "weights")


class Noise(Method):
    def __init__(self, sigma: float = 0.5, kind: str = "gaussian", p: float = 0.8, samples: int = 1,
                 location: str = "input", label_smoothing: float = 0.0) -> None:
        super().__init__(weight=1.0, label_smoothing=label_smoothing)
        self.check(sigma=sigma, p=p)
        check_positive_int(samples=samples)
        self.kind = check_choice("kind", kind, KINDS)
        self.location = check_choice("location", location, LOCATIONS)
        if self.kind == "bernoulli" and not 0.0 < p <= 1.0:
            raise GenexpError(f"method.p={p} is a keep probability and must be in (0, 1]: set method.p=0.8")
        if self.location != "input" and self.kind != "gaussian":
            raise GenexpError(f"method.location={location} supports Gaussian noise only: set method.kind=gaussian "
                              f"or method.location=input")
        self.sigma, self.p, self.samples = sigma, p, samples

    def loss(self, model: GenexpModel, batch: Batch) -> StepOutput:
        # No clean pass: the noisy passes are the training passes and move BatchNorm statistics,
        # so nothing is frozen (the one exception to `Method.loss`'s rule).
        b = batch.y_l.shape[0]
        if self.location == "weights":
            loss, logits = self._weight_noise_loss(model, batch)
        else:
            x, mask, y = (repeat_batch(t, self.samples) for t in (batch.x_l, batch.mask_l, batch.y_l))
            v = view(model, x, mask)
            if self.location == "input":
                logits = noisy_logits(v.forward, v.h, kind=self.kind, sigma=self.sigma, p=self.p, mask=v.pmask,
                                      generator=batch.generator)
            else:
                if not any(isinstance(m, DEFAULT_ACTIVATIONS) for m in model.modules()):
                    raise GenexpError(f"method.location=hidden found no activation module ({type(model).__name__} "
                                      f"applies them functionally): use method.location=input or weights")
                with hidden_noise(model, self.sigma, generator=batch.generator):
                    logits = v.forward(v.h)
            loss = self.cross_entropy(logits, y)
        return StepOutput(loss=loss, logits_l=logits[:b].detach(), logs={"noisy_ce": loss.detach()})

    def _weight_noise_loss(self, model: GenexpModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        def loss_fn() -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(batch.x_l, batch.mask_l)
            return self.cross_entropy(logits, batch.y_l), logits

        return weight_noise_loss(model, loss_fn, self.sigma, samples=self.samples, generator=batch.generator)
