"""A text classifier trained from scratch, after Miyato et al. 2017 ("Adversarial training methods
for semi-supervised text classification"): word embedding → (Bi)LSTM → pooling over the real
tokens → optional ReLU hidden layer → linear.

`embed(ids)` returns the word-embedding output, which is what perturbations act on (padding
positions are masked by `perturb_mask`). With `normalize_embeddings` the embedding table is
normalised before lookup as in the paper: v̄ = (v − E[v]) / sqrt(Var[v]), mean and variance per
dimension over the vocabulary weighted by training-set token frequencies, so a perturbation of
norm ε means the same thing whatever scale the embeddings grow to. Embedding dropout is applied
in `embed` (as in the paper's code), so the clean and perturbed passes share one dropout mask.

The vocabulary comes from `model.text_encoder` (genexp.data.text.vocab_encode), built on the
training texts only, which hands over `vocab_size` and `token_counts`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from genexp.errors import GenexpError
from genexp.models.base import GenexpModel


class LSTMClassifier(GenexpModel):
    def __init__(self, input_shape: Sequence[int], num_classes: int, vocab_size: int | None = None,
                 token_counts: Tensor | None = None, embed_dim: int = 256, hidden_size: int = 512,
                 num_layers: int = 1, bidirectional: bool = True, pooling: str = "max",
                 classifier_hidden: int = 30, embed_dropout: float = 0.5, dropout: float = 0.0,
                 normalize_embeddings: bool = True, cudnn: bool = True) -> None:
        super().__init__()
        if vocab_size is None:
            raise GenexpError("model=lstm needs a text dataset (e.g. dataset=tweets or dataset=imdb): its "
                              "text_encoder builds the vocabulary")
        if pooling not in ("max", "last", "mean"):
            raise GenexpError(f"model.pooling={pooling!r} is unknown: use max, last or mean")
        self.pooling, self.cudnn = pooling, cudnn
        self.normalize_embeddings = normalize_embeddings
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        counts = torch.ones(vocab_size) if token_counts is None else torch.as_tensor(token_counts, dtype=torch.float32)
        # Padding never enters the frequency-weighted statistics.
        counts = counts.clone()
        counts[0] = 0
        self.register_buffer("token_freqs", counts / counts.sum().clamp_min(1))
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        out = hidden_size * (2 if bidirectional else 1)
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        if classifier_hidden:
            layers += [nn.Linear(out, classifier_hidden), nn.ReLU()]
            out = classifier_hidden
        layers.append(nn.Linear(out, num_classes))
        self.classifier = nn.Sequential(*layers)

    def embedding_layer(self) -> nn.Embedding:
        return self.embedding

    def embedding_table(self) -> Tensor:
        w = self.embedding.weight
        if not self.normalize_embeddings:
            return w
        f = self.token_freqs.unsqueeze(1).to(w.dtype)
        mean = (f * w).sum(0, keepdim=True)
        var = (f * (w - mean) ** 2).sum(0, keepdim=True)
        return (w - mean) / torch.sqrt(var + 1e-6)

    def embed(self, x: Tensor) -> Tensor:
        return self.embed_dropout(F.embedding(x.long(), self.embedding_table(), padding_idx=0))

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        b, length = h.shape[:2]
        if mask is None:
            lengths = torch.full((b,), length, dtype=torch.long)
        else:
            lengths = mask.sum(1).clamp_min(1).long().cpu()
            # Past the batch's longest text every position is padding: a tweet batch is ~30 tokens wide
            # inside the 400-token tensor, and the padded path below would otherwise run all 400.
            length = int(lengths.max())
            h = h[:, :length]
        on_device = lengths.to(h.device)
        with torch.backends.cudnn.flags(enabled=self.cudnn):
            if self.lstm.num_layers == 1:
                out, h_n = self.padded_lstm(h, on_device)
            else:
                packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
                out, (h_n, _) = self.lstm(packed)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
        if self.pooling == "last":
            # Final state of the last layer in each direction (the forward one at the last real token).
            dirs = 2 if self.lstm.bidirectional else 1
            feats = torch.cat([h_n[-dirs + i] for i in range(dirs)], dim=-1)
        else:
            real = (torch.arange(length, device=h.device).unsqueeze(0) < on_device.unsqueeze(1))
            real = real.unsqueeze(-1)
            if self.pooling == "max":
                feats = out.masked_fill(~real, float("-inf")).amax(1)
            else:
                feats = (out * real).sum(1) / real.sum(1).clamp_min(1)
        return self.classifier(feats)

    def padded_lstm(self, h: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """One-layer (Bi)LSTM over right-padded sequences; the same outputs (valid positions) and
        final states as on a PackedSequence, without one.

        PyTorch's packed LSTM narrows its input once per time step and every narrow's backward
        builds a zero tensor the size of the whole input: quadratic in the length (pytorch#149194;
        here 807 such nodes took 31 of a 34 s backward at 400 tokens on CPU). The forward direction
        is causal, so right padding cannot reach a real position; the reverse direction runs on
        each sequence reversed within its own length, so it too starts at the last real token.
        """
        b, length, _ = h.shape
        lstm, hidden = self.lstm, self.lstm.hidden_size
        zeros = h.new_zeros(1, b, hidden)

        def direction(x: Tensor, suffix: str) -> Tensor:
            weights = [getattr(lstm, f"{name}_l0{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                       if hasattr(lstm, f"{name}_l0{suffix}")]
            try:
                return torch.lstm(x, (zeros, zeros), weights, lstm.bias, 1, 0.0, self.training, False, True)[0]
            except RuntimeError as e:
                # oneDNN has no bf16 LSTM primitive on CPUs without AVX-512 BF16 (amp=bf16 there):
                # this op alone then runs in float32, the rest of the step stays under autocast.
                if x.device.type != "cpu" or "primitive descriptor" not in str(e):
                    raise
                with torch.autocast("cpu", enabled=False):
                    z = zeros.float()
                    return torch.lstm(x.float(), (z, z), [w.float() for w in weights], lstm.bias, 1, 0.0,
                                      self.training, False, True)[0]

        steps = torch.arange(length, device=h.device).unsqueeze(0)
        last = (lengths - 1).view(b, 1, 1).expand(b, 1, hidden)
        out = direction(h, "")
        finals = [out.gather(1, last)]
        if lstm.bidirectional:
            # rev maps t ↦ len−1−t on the real tokens and leaves padding in place: its own inverse.
            rev = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps).unsqueeze(-1)
            out_rev = direction(h.gather(1, rev.expand_as(h)), "_reverse")
            finals.append(out_rev.gather(1, last))
            out = torch.cat([out, out_rev.gather(1, rev.expand_as(out_rev))], dim=-1)
        real = (steps < lengths.unsqueeze(1)).unsqueeze(-1)
        return out * real, torch.cat(finals, dim=1).transpose(0, 1)
