"""FixMatch, UDA and FlexMatch: each loss equals the reference code's, views are views of the same
examples, FlexMatch's state is checkpointed, data without images refuses a strong view, and a run
with views resumes bit-identically after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from copy import deepcopy

import pytest
import torch
import torch.nn.functional as F
from helpers import checkpoint_step, genexp, train_cfg

import genexp.train.loop as trainer
from genexp.data.views import PLAIN, ViewAugment
from genexp.errors import GenexpError
from genexp.methods.base import Batch
from genexp.methods.fixmatch import FixMatch
from genexp.methods.flexmatch import FlexMatch
from genexp.methods.uda import UDA
from genexp.models.mlp import MLP
from genexp.train.batches import BatchSource

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def model(*, batchnorm: bool = False, classes: int = 5) -> MLP:
    torch.manual_seed(0)
    return MLP((1, 4, 4), classes, widths=(12,), batchnorm=batchnorm).to(F64).train()


def views_batch(b: int = 6, u: int = 16, seed: int = 1, scale: float = 1.0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = lambda n: torch.rand(n, 1, 4, 4, generator=g, dtype=F64) * scale  # noqa: E731
    return Batch(x_l=x(b), y_l=torch.randint(0, 5, (b,), generator=g), idx_u=torch.randperm(40, generator=g)[:u],
                 u_views={"weak": x(u), "strong": x(u)})


def joint_logits(m: MLP, batch: Batch):
    """The reference implementations' single forward over labelled + weak + strong rows."""
    x_w, x_s = batch.u_views["weak"], batch.u_views["strong"]
    logits = m(torch.cat([batch.x_l, x_w, x_s]))
    b, u = len(batch.x_l), len(x_w)
    return logits[:b], logits[b:b + u], logits[b + u:]


# USB (github.com/microsoft/Semi-supervised-learning, semilearn/algorithms/*), written as it writes them.
def usb_fixmatch(logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s, p_cutoff, lambda_u):
    sup_loss = F.cross_entropy(logits_x_lb, y_lb, reduction="mean")
    probs_x_ulb_w = torch.softmax(logits_x_ulb_w.detach(), dim=-1)
    max_probs, _ = torch.max(probs_x_ulb_w, dim=-1)
    mask = max_probs.ge(p_cutoff).to(max_probs.dtype)
    pseudo_label = torch.argmax(probs_x_ulb_w, dim=-1)
    unsup_loss = (F.cross_entropy(logits_x_ulb_s, pseudo_label, reduction="none") * mask).mean()
    return sup_loss + lambda_u * unsup_loss, mask


def usb_uda(logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s, p_cutoff, T, lambda_u):
    sup_loss = F.cross_entropy(logits_x_lb, y_lb, reduction="mean")
    probs_x_ulb_w = torch.softmax(logits_x_ulb_w.detach(), dim=-1)
    max_probs, _ = torch.max(probs_x_ulb_w, dim=-1)
    mask = max_probs.ge(p_cutoff).to(max_probs.dtype)
    pseudo_label = torch.softmax(logits_x_ulb_w.detach() / T, dim=-1)
    ce = torch.sum(-pseudo_label * F.log_softmax(logits_x_ulb_s, dim=-1), dim=1)  # USB's 'ce' consistency
    unsup_loss = (ce * mask).mean()
    return sup_loss + lambda_u * unsup_loss, mask, pseudo_label


class USBFlexMatchHook:
    """FlexMatchThresholdingHook with thresh_warmup=True."""

    def __init__(self, num_ulb, num_classes):
        self.num_ulb, self.num_classes = num_ulb, num_classes
        self.selected_label = torch.ones((num_ulb,), dtype=torch.long) * -1
        self.classwise_acc = torch.zeros((num_classes,), dtype=F64)

    def update(self):
        pseudo_counter = Counter(self.selected_label.tolist())
        if max(pseudo_counter.values()) < self.num_ulb:
            for i in range(self.num_classes):
                self.classwise_acc[i] = pseudo_counter[i] / max(pseudo_counter.values())

    def masking(self, logits_x_ulb, idx_ulb, p_cutoff):
        probs_x_ulb = torch.softmax(logits_x_ulb.detach(), dim=-1)
        max_probs, max_idx = torch.max(probs_x_ulb, dim=-1)
        mask = max_probs.ge(p_cutoff * (self.classwise_acc[max_idx] / (2. - self.classwise_acc[max_idx])))
        select = max_probs.ge(p_cutoff)
        mask = mask.to(max_probs.dtype)
        if idx_ulb[select == 1].nelement() != 0:
            self.selected_label[idx_ulb[select == 1]] = max_idx[select == 1]
        self.update()
        return mask


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.95])
def test_fixmatch_equals_usb(threshold):
    m, batch = model(), views_batch(scale=4.0)
    out = FixMatch(threshold=threshold, weight=0.7).loss(m, batch)
    ref, mask = usb_fixmatch(*_split(joint_logits(m, batch), batch), threshold, 0.7)
    torch.testing.assert_close(out.loss, ref, rtol=0, atol=1e-12)
    assert out.logs["mask_ratio"] == pytest.approx(mask.mean().item())
    _same_gradients(m, out.loss, ref)


def test_uda_equals_usb_up_to_the_targets_entropy():
    """USB writes UDA's term as H(target, p): the same gradient as KL(target ‖ p), larger by the
    (masked mean) entropy of the target."""
    m, batch = model(), views_batch(scale=4.0)
    out = UDA(threshold=0.3, temperature=0.4, weight=1.5).loss(m, batch)
    ref, mask, target = usb_uda(*_split(joint_logits(m, batch), batch), 0.3, 0.4, 1.5)
    entropy = (-(target * target.log()).sum(-1) * mask).mean()
    assert 0 < mask.mean() < 1
    torch.testing.assert_close(out.loss, ref - 1.5 * entropy, rtol=0, atol=1e-12)
    _same_gradients(m, out.loss, ref)


def test_flexmatch_masks_and_state_follow_usb_over_steps():
    n, classes = 40, 5
    m, flex = model(), FlexMatch(threshold=0.3)
    flex.setup(m, num_classes=classes, num_train=n, device=torch.device("cpu"), num_unlabeled=n)
    hook = USBFlexMatchHook(n, classes)
    masks = []
    for step in range(6):
        batch = views_batch(seed=step, scale=4.0)
        out = flex.loss(m, batch)
        l, w, s = joint_logits(m, batch)
        ref_mask = hook.masking(w, batch.idx_u, 0.3)
        ref = F.cross_entropy(l, batch.y_l) + (F.cross_entropy(s, w.argmax(-1), reduction="none") * ref_mask).mean()
        torch.testing.assert_close(out.loss, ref, rtol=0, atol=1e-12)
        masks.append(out.logs["mask_ratio"].item())
        assert torch.equal(flex.latest, hook.selected_label)
        torch.testing.assert_close(flex.effect.double(), hook.classwise_acc, rtol=0, atol=1e-6)
    assert (flex.latest >= 0).any() and flex.effect.max() > 0  # the thresholds moved
    # Its state is what a checkpoint carries: a fresh method restored from it continues identically.
    restored = FlexMatch(threshold=0.3)
    restored.setup(m, num_classes=classes, num_train=n, device=torch.device("cpu"), num_unlabeled=n)
    restored.load_state_dict(deepcopy(flex.state_dict()))
    batch = views_batch(seed=99, scale=4.0)
    torch.testing.assert_close(restored.loss(m, batch).loss, flex.loss(m, batch).loss, rtol=0, atol=0)
    assert torch.equal(restored.latest, flex.latest) and torch.equal(restored.effect, flex.effect)


@pytest.mark.parametrize("cls", [FixMatch, UDA])
def test_threshold_one_gives_no_unlabelled_term(cls):
    m, batch = model(), views_batch()
    method = cls(threshold=1.0)
    out = method.loss(m, batch)
    l, _, _ = joint_logits(m, batch)
    assert out.logs["mask_ratio"] == 0
    assert out.logs[method.term] == 0
    torch.testing.assert_close(out.loss, F.cross_entropy(l, batch.y_l), rtol=0, atol=1e-12)


def test_flexmatch_at_threshold_one_never_leaves_its_warm_up():
    """FlexMatch's thresholds are M(β(c))·τ with β from examples predicted above τ: at τ = 1 none
    ever is, so every class keeps β = 0 and threshold 0 and every example passes, as in USB (whose
    first steps pass every example too)."""
    m, flex = model(), FlexMatch(threshold=1.0)
    flex.setup(m, num_classes=5, num_train=40, device=torch.device("cpu"), num_unlabeled=40)
    for step in range(3):
        out = flex.loss(m, views_batch(seed=step))
        assert out.logs["mask_ratio"] == 1 and out.logs["mean_threshold"] == 0
    assert (flex.latest == -1).all()


def test_joint_forward_moves_batchnorm_over_the_union_and_false_only_the_labelled_pass():
    batch = views_batch()
    joint, split = model(batchnorm=True), model(batchnorm=True)
    FixMatch(threshold=0.0).loss(joint, batch)
    FixMatch(threshold=0.0, joint_forward=False).loss(split, batch)
    ref_joint, ref_split = model(batchnorm=True), model(batchnorm=True)
    ref_joint(torch.cat([batch.x_l, batch.u_views["weak"], batch.u_views["strong"]]))
    ref_split(batch.x_l)
    for got, want in ((joint, ref_joint), (split, ref_split)):
        for a, b in zip(got.buffers(), want.buffers()):
            assert torch.equal(a, b)


def test_views_of_a_batch_are_views_of_the_same_examples():
    x = torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1).expand(50, 1, 4, 4).contiguous()
    seen = {}

    def record(name):
        def aug(v, g):
            seen[name] = v.clone()
            return v + 1000 * (len(seen))
        return aug

    views = {"weak": ViewAugment(after=record("weak")), "strong": ViewAugment(before=record("strong"))}
    source = BatchSource(x, torch.zeros(50, dtype=torch.long), None, torch.arange(10), torch.arange(10, 50),
                         batch_size=4, unlabeled_batch_size=8, seed=0, generator=torch.Generator().manual_seed(0),
                         views=views)
    batch = source.next(0, True, ("weak", "strong"))
    rows = x[batch.idx_u]
    assert torch.equal(seen["weak"], rows) and torch.equal(seen["strong"], rows)
    assert batch.x_u is None and set(batch.u_views) == {"weak", "strong"}
    assert (source.next(1, True, (PLAIN, "weak")).x_u[:, 0, 0, 0] >= 10).all()
    refusal = r"method=fixmatch needs the weak/strong view .*dataset=csv does not have \(its inputs are not images"
    with pytest.raises(GenexpError, match=refusal):
        BatchSource(x, x[:, 0, 0, 0].long(), None, torch.arange(10), torch.arange(10, 50), batch_size=4,
                    unlabeled_batch_size=8, seed=0, generator=torch.Generator()).require(
            ("weak", "strong"), "fixmatch", "csv")


def test_strong_view_on_features_is_refused_in_one_line(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "".join(f"good film {i},1\nbad film {i},0\n" for i in range(20)))
    cfg = train_cfg("dataset=text", f"dataset.path={path}", "method=fixmatch", "labels=10", "steps=2",
                    "progress=false")
    with pytest.raises(GenexpError) as e:
        trainer.train(cfg, tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and "method=fixmatch needs the weak/strong view" in msg and "dataset=text" in msg
    assert not (tmp_path / "run" / "result.json").exists()


def test_fixmatch_trains_on_mnist_sized_images_with_its_views(tmp_path):
    """The weak and strong views run through the trainer on 28x28 uint8 images: a tiny MNIST-format
    file (helpers.write_mnist_pickle), the digit-safe ops, the CNN, BatchNorm's union statistics."""
    from helpers import write_mnist_pickle

    sha, _ = write_mnist_pickle(tmp_path / "m.pkl.gz", n=(60, 20, 20))
    cfg = train_cfg("dataset=mnist", f"dataset.file={tmp_path / 'm.pkl.gz'}", f"dataset.sha256={sha}",
                    f"dataset.cache_dir={tmp_path / 'cache'}", "dataset.val_size=10", "model=cnn",
                    "model.channels=[4,8]", "method=flexmatch", "labels=20", "steps=4", "eval_every=2",
                    "batch_size=8", "unlabeled_batch_size=16", "progress=false", "method.threshold=0.0")
    result = trainer.train(cfg, tmp_path / "run")
    assert result["status"] == "completed"
    last = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["train_mask_ratio"] == 1.0 and last["train_flexmatch"] > 0


RUN = ["method=flexmatch", "labels=30", "steps=100", "eval_every=50", "model.widths=[32]", "checkpoint_every=10",
       "progress=false", "batch_size=16", "unlabeled_batch_size=32", "method.threshold=0.5"]
COMPARED = ["test_acc", "val_acc", "best_step", "test_acc_final", "train_mask_ratio_final", "train_flexmatch_final"]


@pytest.mark.e2e
def test_a_run_with_views_resumes_bit_identically_after_sigkill(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert genexp("train", *RUN, f"hydra.run.dir={full}", cwd=tmp_path).returncode == 0
    p = subprocess.Popen([sys.executable, "-m", "genexp", "train", *RUN, f"hydra.run.dir={killed}"], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while checkpoint_step(killed) < 30 and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert 0 < checkpoint_step(killed) < 100
    r = genexp("train", "resume=true", "progress=false", f"hydra.run.dir={killed}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d / "result.json").read_text()) for d in (full, killed))
    assert {k: a[k] for k in COMPARED} == {k: b[k] for k in COMPARED}
    strip = lambda ln: {k: v for k, v in json.loads(ln).items() if k != "elapsed_s"}  # noqa: E731
    lines = [[strip(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (full, killed)]
    assert lines[0] == lines[1] and "train_mask_ratio" in lines[0][-1]
    ck = [torch.load(d / "checkpoint.pt", weights_only=True)["method"] for d in (full, killed)]
    assert torch.equal(ck[0]["latest"], ck[1]["latest"]) and (ck[0]["latest"] >= 0).any()


def _split(logits, batch):
    l, w, s = logits
    return l, batch.y_l, w, s


def _same_gradients(m, a, b):
    ga = torch.autograd.grad(a, list(m.parameters()), retain_graph=True)
    gb = torch.autograd.grad(b, list(m.parameters()), retain_graph=True)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
