"""Cross-modal retrieval scores: mAP over the whole ranking, mAP@R, precision@k and a PR curve.

Every query ranks the whole database; an item is **relevant** when it shares at least one label
with the query (single labels: the same class; multi-hot labels: a common 1). Two rankings:

- ``hamming`` (binary codes, ±1 or {0, 1}): by Hamming distance ``(K − q·b) / 2`` ascending.
  **Ties** (a K-bit code has only K + 1 distances, so most of the database is tied) are broken by
  database index, ascending: a stable sort of the distances. DCMH and DADH sort the distances
  with an unstable sort (``np.argsort`` quicksort, ``torch.sort``), whose order among ties is
  whatever the sort leaves; their loop with a *stable* sort is what this module reproduces,
  exactly (``bench/map.py`` checks it on 10,000 × 200,000).
- ``cosine`` (real vectors): by cosine similarity descending, ties again by database index.

Definitions (``R_q`` = number of relevant database items of query ``q``, ``rel_q(i)`` whether the
item at rank ``i`` is relevant, ``P_q(i)`` the precision of the top ``i``):

- ``map`` (mAP@all, DCMH/DADH's ``calc_map`` with ``k = None``):
  ``AP_q = (1 / R_q) Σ_i rel_q(i) P_q(i)`` over the whole ranking; a query with ``R_q = 0`` has
  ``AP_q = 0`` and is still counted in the mean (they skip it but divide by every query).
- ``map_at_r``: ``(1 / R_q) Σ_{i ≤ R_q} rel_q(i) P_q(i)`` (Musgrave et al.'s MAP@R).
- ``p@k``: ``P_q(k)`` (``k`` capped at the database size), averaged over all queries.
- PR curve: at ``pr_points`` cut-offs evenly spread over the ranking, mean precision and mean
  recall (queries with ``R_q > 0``).

Fast and exact: queries are processed in chunks, every tensor stays on the input's device. For
Hamming ranking one flat stable sort of small integer keys ``distance + (K + 1) · row`` orders the
whole chunk at once (a radix sort on CPU and GPU, no per-query Python loop); cosine ranking sorts
each chunk's rows (stable). Sums are float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mixbench.errors import DataError

RANKINGS = ("hamming", "cosine")
DEFAULT_KS = (1, 5, 10, 20, 50, 100)


@dataclass
class RankingScores:
    """The scores of one retrieval direction (queries of one modality against the other's database)."""

    map: float
    map_at_r: float
    precision_at: dict[int, float]
    pr_recall: list[float]
    pr_precision: list[float]
    pr_cutoff: list[int]
    n_queries: int
    n_database: int
    queries_without_relevant: int
    ap: torch.Tensor | None = field(default=None, repr=False)

    def summary(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics (``map``, ``map_at_r``, ``p@k``) for metrics.json, keys prefixed."""
        out = {f"{prefix}map": self.map, f"{prefix}map_at_r": self.map_at_r}
        out.update({f"{prefix}p@{k}": v for k, v in self.precision_at.items()})
        return out

    def pr(self) -> dict[str, list[float] | list[int]]:
        return {"cutoff": self.pr_cutoff, "recall": self.pr_recall, "precision": self.pr_precision}


def label_matrix(labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Labels as a float multi-hot matrix (single int labels become one-hot)."""
    if labels.dim() == 1:
        n = int(n_classes if n_classes is not None else (int(labels.max()) + 1 if len(labels) else 1))
        return torch.nn.functional.one_hot(labels.long(), n).to(torch.float32)
    if labels.dim() == 2:
        return labels.to(torch.float32)
    raise DataError(f"labels: expected one label per row or a multi-hot matrix, got shape {tuple(labels.shape)}.")


def relevance(q_labels: torch.Tensor, db_labels: torch.Tensor) -> torch.Tensor:
    """Bool ``(Q, N)``: query and database item share at least one label."""
    if q_labels.dim() == 1 and db_labels.dim() == 1:
        return q_labels[:, None] == db_labels[None, :]
    c = max(int(q_labels.max()) + 1 if q_labels.dim() == 1 and len(q_labels) else 0,
            int(db_labels.max()) + 1 if db_labels.dim() == 1 and len(db_labels) else 0,
            q_labels.shape[1] if q_labels.dim() == 2 else 0, db_labels.shape[1] if db_labels.dim() == 2 else 0)
    ql, dl = label_matrix(q_labels, c), label_matrix(db_labels, c)
    return (ql @ dl.T) > 0


def as_codes(x: torch.Tensor) -> torch.Tensor:
    """Binary codes as ±1 float32 (accepts ±1, {0, 1} or booleans; anything else is refused)."""
    if x.dtype == torch.bool:
        return x.to(torch.float32) * 2 - 1
    xf = x.to(torch.float32)
    if bool(((xf == 0) | (xf == 1)).all()) and not bool((xf == -1).any()):
        return xf * 2 - 1
    if not bool(((xf == 1) | (xf == -1)).all()):
        raise DataError("hamming ranking needs binary codes (±1, {0, 1} or bool); got other values. Use "
                        "ranking='cosine' for real-valued vectors, or sign() the codes first.")
    return xf


def _hits(query: torch.Tensor, database: torch.Tensor, rel: torch.Tensor, ranking: str) -> torch.Tensor:
    """Relevance (bool, ``(Q, N)``) of each query's database items in ranked order (ties by index)."""
    q, n = query.shape[0], database.shape[0]
    if ranking == "hamming":
        bits = query.shape[1]
        # distance + (bits + 1) · row, exact in float32: (bits − q·b) / 2 is an integer ≤ bits
        offset = (bits / 2 + (bits + 1) * torch.arange(q, device=query.device, dtype=torch.float32))[:, None]
        key_dtype = torch.int16 if (bits + 1) * q <= 32767 else torch.int32
        key = torch.addmm(offset, query, database.T, alpha=-0.5).to(key_dtype)
        flat = torch.sort(key.reshape(-1), stable=True).indices  # rows stay apart: the row is the key's high part
        return rel.reshape(-1)[flat].view(q, n)
    order = torch.sort(-(query @ database.T), dim=1, stable=True).indices
    return torch.gather(rel, 1, order)


def rank_scores(
    query: torch.Tensor,
    database: torch.Tensor,
    q_labels: torch.Tensor,
    db_labels: torch.Tensor,
    *,
    ranking: str = "hamming",
    ks: Sequence[int] = DEFAULT_KS,
    pr_points: int = 50,
    chunk_elements: int = 1 << 23,
    keep_ap: bool = False,
    at_r: bool = True,
) -> RankingScores:
    """Score ``query`` rows against ``database`` rows (see the module docstring)."""
    if ranking not in RANKINGS:
        raise DataError(f"ranking = {ranking!r}: must be one of {', '.join(RANKINGS)}.")
    nq, nd = int(query.shape[0]), int(database.shape[0])
    if nq == 0 or nd == 0:
        raise DataError(f"retrieval needs queries and a database; got {nq} queries and {nd} database items.")
    if query.shape[1] != database.shape[1]:
        raise DataError(f"queries are {query.shape[1]}-d and database items {database.shape[1]}-d; they must share "
                        "one space (the method's codes or embeddings).")
    if len(q_labels) != nq or len(db_labels) != nd:
        raise DataError(f"labels: {len(q_labels)} query labels for {nq} queries, {len(db_labels)} database labels "
                        f"for {nd} items.")
    dev = query.device
    if ranking == "hamming":
        q_all, d_all = as_codes(query), as_codes(database.to(dev))
    else:
        q_all = torch.nn.functional.normalize(query.to(torch.float32), dim=1)
        d_all = torch.nn.functional.normalize(database.to(dev, torch.float32), dim=1)
    db_labels = db_labels.to(dev)
    q_labels = q_labels.to(dev)
    ks = sorted({int(k) for k in ks if int(k) >= 1})
    kcap = [min(k, nd) for k in ks]
    pr_points = max(1, min(int(pr_points), nd))
    cut = torch.unique(torch.ceil(torch.arange(1, pr_points + 1, device=dev, dtype=torch.float64) * nd / pr_points)
                       .to(torch.long)).clamp(1, nd)
    step = max(1, int(chunk_elements) // nd)
    if ranking == "hamming":
        step = min(step, max(1, 32767 // (q_all.shape[1] + 1)))
    pos = torch.arange(1, nd + 1, device=dev, dtype=torch.float64)
    inv_pos = 1.0 / pos
    exact32 = nd < (1 << 24)  # counts stay exact in float32
    ap_all = torch.zeros(nq, dtype=torch.float64, device=dev)
    apr_all = torch.zeros(nq, dtype=torch.float64, device=dev)
    pk_sum = torch.zeros(len(ks), dtype=torch.float64, device=dev)
    pr_p = torch.zeros(len(cut), dtype=torch.float64, device=dev)
    pr_r = torch.zeros(len(cut), dtype=torch.float64, device=dev)
    kidx = torch.as_tensor([k - 1 for k in kcap], device=dev, dtype=torch.long)
    kdiv = torch.as_tensor(ks, device=dev, dtype=torch.float64)
    n_with = 0
    for lo in range(0, nq, step):
        hi = min(nq, lo + step)
        hits = _hits(q_all[lo:hi], d_all, relevance(q_labels[lo:hi], db_labels), ranking)
        hits = hits.to(torch.float32 if exact32 else torch.float64)
        cum = torch.cumsum(hits, dim=1)  # relevant items in the top i
        r = cum[:, -1].to(torch.float64)
        has = r > 0
        rsafe = torch.where(has, r, torch.ones_like(r))
        # Σ_i rel(i) · P(i) = Σ_i rel(i) · cum(i) / i: integers times 1/i, summed in float64
        x = torch.empty(cum.shape, dtype=torch.float64, device=dev)
        torch.mul(hits, cum, out=x)  # exact integers, written as float64 in the same pass
        del hits
        ap_all[lo:hi] = (x @ inv_pos) / rsafe
        if at_r:
            apr_all[lo:hi] = (torch.where(pos[None, :] <= r[:, None], x, 0.0) @ inv_pos) / rsafe
        del x
        if ks:
            pk_sum += (cum[:, kidx].to(torch.float64) / kdiv).sum(0)
        at = cum[:, cut - 1].to(torch.float64)
        pr_p += (at / cut.to(torch.float64)).sum(0)
        pr_r += (at[has] / r[has, None]).sum(0)
        n_with += int(has.sum())
    return RankingScores(
        map=float(ap_all.mean()),
        map_at_r=float(apr_all.mean()) if at_r else float("nan"),
        precision_at={k: float(v) / nq for k, v in zip(ks, pk_sum.tolist())},
        pr_recall=[float(v) / max(1, n_with) for v in pr_r.tolist()],
        pr_precision=[float(v) / nq for v in pr_p.tolist()],
        pr_cutoff=[int(c) for c in cut.tolist()],
        n_queries=nq,
        n_database=nd,
        queries_without_relevant=nq - n_with,
        ap=ap_all.cpu() if keep_ap else None,
    )


def map_at_all(query: torch.Tensor, database: torch.Tensor, q_labels: torch.Tensor, db_labels: torch.Tensor,
               ranking: str = "hamming", **kwargs: Any) -> float:
    """mAP over the whole ranking (see :func:`rank_scores`)."""
    return rank_scores(query, database, q_labels, db_labels, ranking=ranking, ks=(), pr_points=1, at_r=False,
                       **kwargs).map
