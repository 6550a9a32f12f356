"""VAT's power iteration with dropout: probes replay the clean pass's masks (method.shared_noise)."""
import torch
from torch import nn

from genexp.regularizers.rng_replay import RngReplay
from genexp.regularizers.vat import vat_perturbation


def _cosines(shared: bool) -> torch.Tensor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Dropout(0.5), nn.Linear(32, 5)).train()
    x, d0 = torch.randn(16, 20), torch.randn(16, 20)
    replay = RngReplay(x.device)
    with torch.no_grad():
        target = net(x)
    r = vat_perturbation(net, x, xi="auto", eps=1.0, target_logits=target, init=d0,
                         replay=replay if shared else None)
    # The same masks, made explicit: a deterministic net whose dropout is the clean pass's mask.
    with replay.replay():
        mask = net[2](torch.ones(16, 32))

    def masked(z: torch.Tensor) -> torch.Tensor:
        return net[3](net[1](net[0](z)) * mask)

    with torch.no_grad():
        assert torch.allclose(masked(x), target, atol=1e-5)
    exact = vat_perturbation(masked, x, xi="auto", eps=1.0, target_logits=target, init=d0)
    return torch.nn.functional.cosine_similarity(r, exact, dim=1)


def test_probe_passes_replay_the_clean_pass_dropout():
    assert _cosines(shared=True).min() > 0.99


def test_fresh_masks_give_a_noise_driven_direction():
    # What the public ports compute: the finite difference is dominated by the mask difference.
    assert _cosines(shared=False).mean() < 0.8


def test_replay_restores_the_state_it_found():
    replay = RngReplay(torch.device("cpu"))
    a = torch.rand(3)
    with replay.replay():
        assert torch.equal(torch.rand(3), a)
    b = torch.rand(3)
    torch.set_rng_state(replay.state[0])
    torch.rand(3)
    assert torch.equal(torch.rand(3), b)
