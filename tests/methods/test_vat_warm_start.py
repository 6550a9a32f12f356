"""Amortised VAT: per-example directions are stored, reused between refreshes, and checkpointed."""
import torch

from genexp.methods.base import Batch
from genexp.methods.vat import VAT
from genexp.models.mlp import MLP


def batch(step, idx, x):
    return Batch(x_l=x[:4], y_l=torch.zeros(4, dtype=torch.long), x_u=x[idx], idx_u=idx, step=step,
                 generator=torch.Generator().manual_seed(step))


def test_directions_stored_and_reused_between_refreshes():
    torch.manual_seed(0)
    x = torch.randn(20, 1, 4, 4)
    model = MLP((1, 4, 4), 3, widths=(16,))
    vat = VAT(eps=2.0, xi=1e-3, warm_start=True, refresh_every=2, buffer_dtype="float32")
    vat.setup(model, num_classes=3, num_train=20, device=torch.device("cpu"))
    idx = torch.tensor([3, 5, 7, 11])
    vat.loss(model, batch(0, idx, x))  # a refresh step: power iteration from random starts
    assert vat.seen.sum() == 4 and vat.seen[idx].all()
    norms = vat.directions[idx].flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.ones(4), atol=1e-5)
    assert vat.directions[~vat.seen].abs().sum() == 0
    stored = vat.directions[idx].clone()
    vat.loss(model, batch(1, idx, x))  # between refreshes: the stored direction is reused unchanged
    assert torch.allclose(vat.directions[idx], stored, atol=1e-6)
    vat.loss(model, batch(2, idx, x))  # a refresh again: the power iteration moves it (weights unchanged,
    # so it converges toward the dominant direction rather than jumping randomly)
    cos = torch.nn.functional.cosine_similarity(vat.directions[idx].flatten(1), stored.flatten(1))
    assert (cos > 0.5).all()
    state = vat.state_dict()
    fresh = VAT(eps=2.0, warm_start=True)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.directions, vat.directions) and torch.equal(fresh.seen, vat.seen)
