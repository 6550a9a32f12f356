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


# --- Vocabulary of the training texts, for models trained from scratch (model=lstm) -----------

TOKEN_RE = r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]"
PAD, UNK = 0, 1


def simple_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words, numbers and single punctuation marks; HTML line breaks (IMDB's <br />) are spaces."""
    import re

    text = re.sub(r"<br\s*/?>", " ", text)
    if lowercase:
        text = text.lower()
        return re.findall(TOKEN_RE, text)
    return re.findall(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[^\sA-Za-z0-9]", text)


def vocab_encode(data: Dataset, max_length: int = 400, min_freq: int = 2, max_vocab: int = 50000,
                 lowercase: bool = True) -> Dataset:
    """Token ids from a vocabulary built on the TRAINING texts only (labelled and unlabelled rows;
    never the test texts): the `max_vocab` most frequent tokens seen at least `min_freq` times,
    ids 2.. in order of frequency, 0 = padding, 1 = unknown. Texts keep their first
    `max_length` tokens and are padded to the longest; an empty text becomes one unknown token.

    Hands the model its vocabulary size and the training-set token counts (Miyato et al. 2017
    normalise embeddings with these frequencies) through `data.model_kwargs`."""
    from collections import Counter

    from genexp.errors import GenexpError

    for key, value, low in (("max_length", max_length, 1), ("min_freq", min_freq, 1), ("max_vocab", max_vocab, 1)):
        if not isinstance(value, int) or value < low:
            raise GenexpError(f"model.text_encoder.{key}={value} must be an integer >= {low}")
    train_tokens = [simple_tokenize(t, lowercase)[:max_length] for t in data.x_train]
    counts = Counter(tok for toks in train_tokens for tok in toks)
    kept = [tok for tok, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq][:max_vocab]
    index = {tok: i + 2 for i, tok in enumerate(kept)}
    freqs = torch.zeros(len(kept) + 2, dtype=torch.float64)

    def enc(token_lists: list[list[str]], count: bool) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(1, max((len(t) for t in token_lists), default=1))
        ids = torch.zeros(len(token_lists), length, dtype=torch.long)
        for row, toks in enumerate(token_lists):
            seq = [index.get(tok, UNK) for tok in toks] or [UNK]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        if count:
            freqs.index_add_(0, ids.flatten(), torch.ones(ids.numel(), dtype=torch.float64))
        return ids, (ids != PAD).long()

    data.x_train, data.mask_train = enc(train_tokens, count=True)
    data.x_test, data.mask_test = enc([simple_tokenize(t, lowercase)[:max_length] for t in data.x_test], count=False)
    freqs[PAD] = 0
    data.model_kwargs = {"vocab_size": len(kept) + 2, "token_counts": freqs.float()}
    data.vocab = ["<pad>", "<unk>", *kept]
    return data


# --- Pretrained tokenizers, for Hugging Face models (model=hf_encoder) -------------------------

def hf_tokenize(data: Dataset, name_or_path: str, max_length: int = 128) -> Dataset:
    """The model's own AutoTokenizer (loaded like the model: local dir, alias, or hub name)."""
    from genexp.data.pretrained import load_pretrained
    from genexp.errors import GenexpError

    if not isinstance(max_length, int) or max_length < 2:
        raise GenexpError(f"model.text_encoder.max_length={max_length} must be an integer >= 2")
    tokenizer = load_pretrained("tokenizer", name_or_path)
    return tokenize_encode(data, tokenizer, max_length)
