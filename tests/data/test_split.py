import numpy as np
import pytest

from genexp.data.split import Split, make_split
from genexp.errors import GenexpError


def labels_array(n_per_class=(100, 80, 60), seed=0):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    return np.random.default_rng(seed).permutation(y)


def test_balanced_disjoint_and_complete():
    y = labels_array()
    s = make_split(y, 30, num_classes=3, split_seed=1, val_size=0.1)
    assert np.bincount(y[s.labeled], minlength=3).tolist() == [10, 10, 10]
    assert not set(s.labeled) & set(s.unlabeled)
    assert not set(s.val) & (set(s.labeled) | set(s.unlabeled))
    assert len(s.labeled) + len(s.unlabeled) + len(s.val) == len(y)
    # Stratified validation: about 10% of each class.
    assert np.bincount(y[s.val], minlength=3).tolist() == [10, 8, 6]


def test_remainder_spread_over_classes():
    y = labels_array()
    counts = np.bincount(y[make_split(y, 32, num_classes=3, split_seed=0).labeled], minlength=3)
    assert counts.sum() == 32 and counts.max() - counts.min() == 1


def test_reproducible_from_split_seed_only():
    y = labels_array()
    a, b = make_split(y, 30, num_classes=3, split_seed=7), make_split(y, 30, num_classes=3, split_seed=7)
    c = make_split(y, 30, num_classes=3, split_seed=8)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("labeled", "unlabeled", "val"))
    assert not np.array_equal(a.labeled, c.labeled)


def test_save_load_roundtrip(tmp_path):
    s = make_split(labels_array(), 30, num_classes=3, split_seed=3)
    s.save(tmp_path / "split.json")
    t = Split.load(tmp_path / "split.json")
    assert np.array_equal(s.labeled, t.labeled) and np.array_equal(s.val, t.val)


def test_all_labels_and_include_labeled():
    y = labels_array()
    s = make_split(y, "all", num_classes=3, split_seed=0)
    assert len(s.labeled) + len(s.val) == len(y)
    t = make_split(y, 30, num_classes=3, split_seed=0, unlabeled_includes_labeled=True)
    assert set(t.labeled) <= set(t.unlabeled)


def test_unlabeled_only_rows_join_pool():
    y = labels_array()
    y[:50] = -1
    s = make_split(y, 30, num_classes=3, split_seed=0)
    assert set(range(50)) <= set(s.unlabeled)
    assert not set(range(50)) & (set(s.labeled) | set(s.val))


def test_first_strategy_takes_file_order():
    y = labels_array()
    s = make_split(y, 20, num_classes=3, split_seed=0, strategy="first")
    pool = np.setdiff1d(np.arange(len(y)), s.val)
    assert np.array_equal(s.labeled, pool[:20])


@pytest.mark.parametrize("labels,match", [(2, "fewer than the 3 classes"), (10_000, "exceeds"),
                                          ("abc", "not a number"), (200, "only")])
def test_bad_labels(labels, match):
    with pytest.raises(GenexpError, match=match):
        make_split(labels_array(), labels, num_classes=3, split_seed=0)


def test_first_strategy_refuses_a_file_sorted_by_label():
    y = np.repeat([0, 1], 500)  # e.g. the tweets corpus file, grouped by sentiment
    with pytest.raises(GenexpError, match="labeled_strategy=balanced"):
        make_split(y, 200, num_classes=2, split_seed=0, strategy="first")


def test_tweets_first_200_hold_both_classes():
    from genexp.data.tweets import load_tweets
    d = load_tweets(test_fraction=0.1)
    y = d.y_train.numpy()
    s = make_split(y, 200, num_classes=2, split_seed=0, val_size=1000, strategy="first")
    counts = np.bincount(y[s.labeled], minlength=2)
    assert counts.min() >= 30, counts  # the corpus is ~70/30 negative/positive
