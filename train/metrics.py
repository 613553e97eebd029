"""Clustering metrics, all computed from one contingency matrix (DM2C's seven: ACC, ARI, NMI, F, P, R, purity).

The definitions are those of DM2C's ``code/utils.py`` (the paper's table), written out:

- ``acc``: Hungarian matching of clusters to classes on the class × cluster table (maximum total
  overlap, one cluster per class), then the matched share of rows. With more clusters than
  classes the unmatched clusters count as wrong; with fewer, some classes get no cluster.
- ``ari``: adjusted Rand index (the pair-confusion form scikit-learn uses, exact integers).
- ``nmi``: mutual information over the arithmetic mean of the two entropies (scikit-learn's
  ``average_method="arithmetic"``, including its limit cases).
- ``precision``, ``recall``, ``f_score``: pair counting. With ``n_ij`` the table,
  ``TP = Σ n_ij² − n``, ``P = TP / (Σ_j n_·j² − n)``, ``R = TP / (Σ_i n_i·² − n)``,
  ``F = 2PR / (P + R)`` (every pair counted twice in all three sums, so the ratios are the usual
  pair-counting ones). 0/0 is 0, except when both labelings put every row alone (identical
  partitions): then P = R = F = 1.
- ``purity``: Σ over clusters of the largest class count, over n.

Contingency matrices from disjoint shards (same class and cluster index sets) add up, so a
sharded evaluation can sum them and call :func:`metrics_from_contingency` once.

>>> m = clustering_metrics([0, 0, 1, 1], [1, 1, 0, 0])
>>> m["acc"], m["ari"], m["nmi"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from mixbench.errors import DataError

METRICS = ("acc", "ari", "nmi", "f_score", "precision", "recall", "purity")

HIGHER_IS_BETTER = {m: True for m in METRICS}
"""Every metric here grows with agreement (reports and plots read this)."""


def _labels(y: Any, name: str) -> np.ndarray:
    """``y`` (numpy array, torch tensor or sequence) as a 1-D int64 array, checked."""
    if hasattr(y, "detach") and hasattr(y, "cpu"):  # torch.Tensor, without importing torch
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(
            f"{name}: expected a 1-D array of labels, got shape {arr.shape}; pass one label per row "
            "(for a column vector use y.ravel())."
        )
    if arr.size == 0:
        raise DataError(f"{name}: no labels (empty array); metrics need at least one row.")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{name}: row {i} holds {arr[i].item()!r}, not an integer label; labels must be whole numbers "
                "(class ids or cluster ids)."
            )
        return arr.astype(np.int64)
    raise DataError(f"{name}: labels of dtype {arr.dtype} are not integers; pass integer class / cluster ids.")


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise DataError(
            f"y_true has {len(t)} rows but y_pred has {len(p)}; both must label the same rows in the same order."
        )
    return t, p


def _table(t: np.ndarray, p: np.ndarray, classes: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(table, class values, cluster values); classes × clusters, int64."""
    if classes is None:
        cls_vals, ti = np.unique(t, return_inverse=True)
    else:
        cls_vals = np.asarray(list(classes), dtype=np.int64)
        if len(np.unique(cls_vals)) != len(cls_vals):
            raise DataError(f"classes: {list(classes)} has repeated values; give each class once.")
        order = np.argsort(cls_vals)
        pos = np.searchsorted(cls_vals[order], t)
        pos = np.clip(pos, 0, len(cls_vals) - 1)
        ti = order[pos]
        missing = cls_vals[ti] != t
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise DataError(f"y_true: row {i} has class {t[i]}, which is not in classes={list(cls_vals)}.")
    clu_vals, pi = np.unique(p, return_inverse=True)
    n_cls, n_clu = len(cls_vals), len(clu_vals)
    table = np.bincount(ti.ravel() * n_clu + pi.ravel(), minlength=n_cls * n_clu).reshape(n_cls, n_clu)
    return table.astype(np.int64), cls_vals, clu_vals


def contingency(y_true: Any, y_pred: Any, *, classes: Sequence[int] | None = None) -> np.ndarray:
    """Class × cluster counts: entry ``[i, j]`` is the number of rows of class ``i`` in cluster ``j``.

    Rows are the sorted distinct values of ``y_true`` (or ``classes``, in the order given, to keep
    absent classes as zero rows); columns are the sorted distinct values of ``y_pred``."""
    t, p = _pair(y_true, y_pred)
    return _table(t, p, classes)[0]


def hungarian(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of a class × cluster count table maximising the matched counts:
    (class rows, cluster columns). ``table[rows, cols].sum()`` is the number of rows ``acc`` counts."""
    rows, cols = linear_sum_assignment(table, maximize=True)
    return rows, cols


def _sum_sq(counts: np.ndarray) -> int:
    """Σ c² over ``counts``, as an exact Python int."""
    c = counts.astype(np.int64).ravel()
    if int(c.sum()) < 3_000_000_000:  # Σ c² ≤ (Σ c)² < 2⁶³: int64 is exact
        return int(np.dot(c, c))
    return sum(int(v) * int(v) for v in c)


def metrics_from_contingency(table: np.ndarray) -> dict[str, float]:
    """All seven :data:`METRICS` from a class × cluster count table (see the module docstring)."""
    table = np.asarray(table)
    if table.ndim != 2 or table.size == 0:
        raise DataError(f"contingency table: expected a non-empty 2-D count matrix, got shape {table.shape}.")
    if (table < 0).any():
        raise DataError("contingency table: negative counts; entries are numbers of rows.")
    table = table.astype(np.int64)
    n = int(table.sum())
    if n == 0:
        raise DataError("contingency table: all counts are zero; metrics need at least one row.")
    # Absent classes / clusters (zero rows or columns, e.g. from summed shards) change nothing.
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    a = table.sum(axis=1)  # class sizes
    b = table.sum(axis=0)  # cluster sizes
    sum_ij = _sum_sq(table)
    sum_a = _sum_sq(a)
    sum_b = _sum_sq(b)

    rows, cols = hungarian(table)
    acc = float(table[rows, cols].sum()) / n
    purity = float(table.max(axis=0).sum()) / n

    # ARI in scikit-learn's pair-confusion form (exact integer arithmetic).
    tp = sum_ij - n
    fp = sum_b - sum_ij
    fn = sum_a - sum_ij
    tn = n * n - fp - fn - sum_ij
    if fn == 0 and fp == 0:
        ari = 1.0
    else:
        ari = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))

    # Pairwise precision / recall / F (DM2C's calculate_metrics).
    den_p, den_r = sum_b - n, sum_a - n
    if den_p == 0 and den_r == 0:
        precision = recall = f_score = 1.0
    else:
        precision = tp / den_p if den_p > 0 else 0.0
        recall = tp / den_r if den_r > 0 else 0.0
        f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    # NMI, arithmetic normalisation, with scikit-learn's limit cases and order of operations.
    if len(a) == len(b) == 1:
        nmi = 1.0
    else:
        mi = _mutual_info(table, a, b, n)
        nmi = 0.0 if mi == 0.0 else mi / ((_entropy(a, n) + _entropy(b, n)) / 2.0)
    return {
        "acc": float(acc),
        "ari": float(ari),
        "nmi": float(nmi),
        "f_score": float(f_score),
        "precision": float(precision),
        "recall": float(recall),
        "purity": float(purity),
    }


def _mutual_info(table: np.ndarray, a: np.ndarray, b: np.ndarray, n: int) -> float:
    """Mutual information (nats) of the table; 0 when either side has one value."""
    if len(a) == 1 or len(b) == 1:
        return 0.0
    nz_i, nz_j = np.nonzero(table)
    nij = table[nz_i, nz_j]
    p_ij = nij / n
    log_outer = -np.log(a[nz_i] * b[nz_j]) + 2.0 * math.log(n)
    terms = p_ij * (np.log(nij) - math.log(n)) + p_ij * log_outer
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    return float(max(terms.sum(), 0.0))


def _entropy(counts: np.ndarray, n: int) -> float:
    """Entropy (nats) of a partition with these (positive) part sizes."""
    if len(counts) == 1:
        return 0.0
    p = counts.astype(np.float64)
    return float(-np.sum((p / n) * (np.log(p) - math.log(n))))


def clustering_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """All seven :data:`METRICS` (``acc, ari, nmi, f_score, precision, recall, purity``) for one labeling.

    ``y_true`` are class ids, ``y_pred`` cluster ids, one per row (numpy arrays, torch tensors on any
    device, or sequences of integers). Cluster ids need not match class ids; their number may differ.

    >>> clustering_metrics([0, 0, 0, 1, 1, 2], [1, 1, 0, 0, 0, 2])["purity"]
    0.8333333333333334
    """
    t, p = _pair(y_true, y_pred)
    return metrics_from_contingency(_table(t, p, None)[0])


def hungarian_mapping(y_true: Any, y_pred: Any) -> dict[int, int]:
    """Cluster id → class id of the Hungarian matching that defines ``acc``.

    With more clusters than classes, the unmatched clusters are absent from the mapping (their rows
    count as wrong in ``acc``); with fewer, some classes are matched by no cluster.

    >>> hungarian_mapping([0, 0, 1, 1, 2], [5, 5, 7, 7, 7])
    {5: 0, 7: 1}
    """
    t, p = _pair(y_true, y_pred)
    table, cls_vals, clu_vals = _table(t, p, None)
    rows, cols = hungarian(table)
    return {int(clu_vals[j]): int(cls_vals[i]) for i, j in sorted(zip(rows, cols), key=lambda rc: clu_vals[rc[1]])}


def matched_confusion(y_true: Any, y_pred: Any, *, classes: Sequence[int] | None = None) -> np.ndarray:
    """True class × matched class counts after the Hungarian matching (for confusion plots).

    Column ``i`` holds the rows of the cluster matched to class ``i`` (all zero if no cluster is
    matched to it). Clusters left unmatched (more clusters than classes) follow as extra columns, in
    cluster-id order, so the matrix is square exactly when #clusters ≤ #classes. The trace over
    ``n`` is ``acc``. Rows/columns follow the sorted distinct classes of ``y_true``, or ``classes``.
    """
    t, p = _pair(y_true, y_pred)
    table, cls_vals, clu_vals = _table(t, p, classes)
    rows, cols = hungarian(table)
    n_cls = len(cls_vals)
    matched_to = dict(zip(cols.tolist(), rows.tolist()))  # cluster column → class row
    unmatched = [j for j in range(len(clu_vals)) if j not in matched_to]
    out = np.zeros((n_cls, n_cls + len(unmatched)), dtype=np.int64)
    for j, i in matched_to.items():
        out[:, i] = table[:, j]
    for extra, j in enumerate(unmatched):
        out[:, n_cls + extra] = table[:, j]
    return out
