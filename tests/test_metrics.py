"""train.metrics: hand-worked cases, scikit-learn as the reference for ARI/NMI, input checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import pair_confusion_matrix

from mixbench.errors import DataError
from train.metrics import (
    METRICS,
    clustering_metrics,
    contingency,
    hungarian_mapping,
    matched_confusion,
    metrics_from_contingency,
)

# A 3-class example worked by hand (9 rows). Clusters are labelled 2, 0, 1 so that the matching
# is not the identity. Contingency (rows = classes 0..2, columns = clusters 0..2):
#            c0 c1 c2
#   class 0   3  0  3      (clusters 2 and 0 both hold 3 rows of class 0)
#   class 1   1  1  0
#   class 2   0  1  0
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 2]
Y_PRED = [2, 2, 2, 0, 0, 0, 0, 1, 1]
#   ACC: the best one-to-one matching is c2→0 (3), c0→1 (1), c1→2 (1) = 5 of 9.
#   purity: column maxima 3 + 1 + 3 = 7 of 9.
#   pairs: Σ n_ij² = 9+1+1+1+9 = 21 → TP = 21 − 9 = 12; cluster sizes (4, 2, 3) → Σ b² − n = 29 − 9 = 20;
#          class sizes (6, 2, 1) → Σ a² − n = 41 − 9 = 32.  P = 12/20 = 0.6, R = 12/32 = 0.375,
#          F = 2·0.6·0.375 / 0.975 = 6/13.
#   ARI (pairs, halved): TP 6, FP 4, FN 10, TN 16 → 2(6·16 − 10·4) / (16·26 + 10·20) = 112/616 = 2/11.
HAND = {"acc": 5 / 9, "purity": 7 / 9, "precision": 0.6, "recall": 0.375, "f_score": 6 / 13, "ari": 2 / 11}


def test_hand_worked_example() -> None:
    m = clustering_metrics(Y_TRUE, Y_PRED)
    assert set(m) == set(METRICS)
    for key, value in HAND.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(Y_TRUE, Y_PRED), abs=1e-12)
    assert contingency(Y_TRUE, Y_PRED).tolist() == [[3, 0, 3], [1, 1, 0], [0, 1, 0]]
    assert hungarian_mapping(Y_TRUE, Y_PRED) == {0: 1, 1: 2, 2: 0}
    conf = matched_confusion(Y_TRUE, Y_PRED)
    assert conf.tolist() == [[3, 3, 0], [0, 1, 1], [0, 0, 1]]
    assert np.trace(conf) / len(Y_TRUE) == pytest.approx(m["acc"])


def test_perfect_and_permuted_labelings() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    for perm in ([0, 1, 2, 3], [3, 1, 0, 2], [10, 20, 30, 40]):
        m = clustering_metrics(y, np.asarray(perm)[y])
        assert all(m[k] == pytest.approx(1.0) for k in METRICS), (perm, m)


@pytest.mark.parametrize(
    "y_true,y_pred,expected",
    [
        # more clusters than classes: every row alone
        ([0, 0, 1, 1], [0, 1, 2, 3], {"acc": 0.5, "purity": 1.0, "precision": 0.0, "recall": 0.0, "f_score": 0.0}),
        # fewer clusters than classes
        ([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1], {"acc": 4 / 6, "purity": 4 / 6, "recall": 1.0, "precision": 3 / 7}),
    ],
)
def test_cluster_count_differs_from_class_count(y_true: list[int], y_pred: list[int], expected: dict[str, float]) -> None:
    m = clustering_metrics(y_true, y_pred)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    assert m["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred))
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred))
    mapping = hungarian_mapping(y_true, y_pred)
    assert len(mapping) == min(len(set(y_true)), len(set(y_pred)))
    conf = matched_confusion(y_true, y_pred)
    n_cls, n_clu = len(set(y_true)), len(set(y_pred))
    assert conf.shape == (n_cls, n_cls + max(0, n_clu - n_cls))
    assert conf.sum() == len(y_true)
    assert np.trace(conf) / len(y_true) == pytest.approx(m["acc"])


def test_against_sklearn_and_brute_force_on_random_labelings() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(2, 60))
        t = rng.integers(0, int(rng.integers(1, 5)), n)
        p = rng.integers(0, int(rng.integers(1, 5)), n)
        m = clustering_metrics(t, p)
        assert m["ari"] == pytest.approx(adjusted_rand_score(t, p), abs=1e-12)
        assert m["nmi"] == pytest.approx(normalized_mutual_info_score(t, p, average_method="arithmetic"), abs=1e-12)
        (tn, fp), (fn, tp) = pair_confusion_matrix(t, p)
        if tp + fp > 0:
            assert m["precision"] == pytest.approx(tp / (tp + fp))
        if tp + fn > 0:
            assert m["recall"] == pytest.approx(tp / (tp + fn))
        # ACC: the best one-to-one matching, by brute force over all assignments
        cls, clu = np.unique(t), np.unique(p)
        table = contingency(t, p)
        best = 0
        if len(clu) <= len(cls):
            for rows in itertools.permutations(range(len(cls)), len(clu)):
                best = max(best, sum(table[r, j] for j, r in enumerate(rows)))
        else:
            for cols in itertools.permutations(range(len(clu)), len(cls)):
                best = max(best, sum(table[i, c] for i, c in enumerate(cols)))
        assert m["acc"] == pytest.approx(best / n)
        assert m["purity"] == pytest.approx(table.max(axis=0).sum() / n)


def test_torch_inputs_match_numpy() -> None:
    t, p = np.array(Y_TRUE), np.array(Y_PRED)
    assert clustering_metrics(torch.as_tensor(t), torch.as_tensor(p)) == clustering_metrics(t, p)
    assert clustering_metrics(t.astype(np.float32), p) == clustering_metrics(t, p)  # integral floats are fine


def test_contingency_tables_of_shards_add_up() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(0, 4, 200)
    p = rng.integers(0, 5, 200)
    classes = range(4)
    parts = [(t[:90], p[:90]), (t[90:], p[90:])]
    total = np.zeros((4, 5), dtype=np.int64)
    for a, b in parts:  # every shard sees every cluster id here; align columns by cluster id
        table = contingency(a, b, classes=classes)
        total[:, np.unique(b)] += table
    assert metrics_from_contingency(total) == clustering_metrics(t, p)
    # absent classes are zero rows and change nothing
    padded = contingency(t, p, classes=range(6))
    assert padded.shape == (6, 5) and padded[4:].sum() == 0
    assert metrics_from_contingency(padded) == clustering_metrics(t, p)


def test_single_cluster_and_single_class_limits() -> None:
    m = clustering_metrics([0, 0, 0], [5, 5, 5])
    assert m["acc"] == m["nmi"] == m["ari"] == m["f_score"] == 1.0
    m = clustering_metrics([0, 1, 2, 3], [0, 0, 0, 0])
    assert m["nmi"] == normalized_mutual_info_score([0, 1, 2, 3], [0, 0, 0, 0]) == 0.0
    assert m["acc"] == 0.25 and m["recall"] == 0.0  # no pair shares a class
    m = clustering_metrics([0], [0])
    assert m["acc"] == 1.0 and m["f_score"] == 1.0


@pytest.mark.parametrize(
    "y_true,y_pred,match",
    [
        ([0, 1, 2], [0, 1], "y_true has 3 rows but y_pred has 2"),
        ([[0, 1], [1, 0]], [[0, 1], [1, 0]], "expected a 1-D array"),
        ([], [], "empty"),
        ([0, 1.5], [0, 1], "row 1 holds 1.5"),
        ([0, float("nan")], [0, 1], "row 1"),
        (["a", "b"], [0, 1], "not integers"),
    ],
)
def test_bad_inputs_give_clear_errors(y_true: object, y_pred: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        clustering_metrics(y_true, y_pred)


def test_unknown_class_in_classes_argument() -> None:
    with pytest.raises(DataError, match="class 7, which is not in classes"):
        contingency([0, 7], [0, 1], classes=[0, 1])
