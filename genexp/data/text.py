"""Turning raw texts into model inputs: TF-IDF vectors for vector models, token ids otherwise."""
from __future__ import annotations

import torch

from genexp.data.dataset import Dataset


def tfidf_encode(data: Dataset, max_features: int = 5000) -> Dataset:
    """Fit TF-IDF on the training texts only (never the test texts) and densify; for MLPs."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(max_features=max_features, sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    x_train = torch.as_tensor(vec.fit_transform(data.x_train).toarray(), dtype=torch.float32)
    x_test = torch.as_tensor(vec.transform(data.x_test).toarray(), dtype=torch.float32)
    data.x_train, data.x_test = x_train, x_test
    return data


def tokenize_encode(data: Dataset, tokenizer, max_length: int) -> Dataset:
    """Token ids and attention masks (1 = real token) padded to the longest text, capped at max_length."""
    def enc(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        return out["input_ids"], out["attention_mask"]

    data.x_train, data.mask_train = enc(data.x_train)
    data.x_test, data.mask_test = enc(data.x_test)
    return data
