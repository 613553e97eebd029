"""Cross-modal retrieval scores: mAP over the whole ranking, mAP@R, precision@k and a PR curve.

Every query ranks the whole database; an item is **relevant** when it shares at least one label
with the query (single labels: the same class; multi-hot labels: a common 1). Two rankings:

- ``hamming`` (binary codes, ±1 or {0, 1}): by Hamming distance ``(K − q·b) / 2`` ascending.
  **Ties** (a K-bit code has only K + 1 distances, so most of the database is tied) are broken by
  database index, ascending: a stable sort of the distances. DCMH and DADH sort the distances
  with an unstable sort (``np.argsort`` quicksort, ``torch.sort``), whose order among ties is
  whatever the sort leaves; their loop with a *stable* sort is what this module reproduces,
  exactly (``bench/map.py`` checks it per query against 200,000 items).
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

Fast and exact, two engines (``engine``), same values:

- ``numpy`` (the default for Hamming ranking of CPU tensors): codes are packed into 64-bit words and
  each distance is the popcount of an XOR, an exact integer ``0..K`` stored as ``uint8``; each
  query's distances are ordered by numpy's stable sort, which for 8- and 16-bit keys is a radix sort
  (linear in the database size; stable, so ties stay in index order); label sets are packed into
  words too (relevant = a nonzero AND). Only the ranks ``p_1 < p_2 < ...`` of the relevant items are
  kept, and ``AP = (1/R) Σ_m m / p_m``; mAP@R, P@k and the PR points are counts of ``p_m`` below a
  cut-off (``searchsorted``). Buffers are preallocated per chunk of queries; nothing of size
  queries × database is ever float.
- ``torch`` (any ranking, any device; the default off the CPU): queries in chunks, every tensor on the
  input's device. For Hamming ranking one flat stable sort of small integer keys
  ``distance + (K + 1) · row`` orders the whole chunk (a radix sort on the GPU); cosine ranking
  sorts each chunk's rows (stable); cumulative counts and one matrix-vector product give every AP.

Sums are float64; the engines agree to about 1e-15 (tests compare both with a brute-force
implementation, and ``bench/map.py`` compares both with the DCMH/DADH loop at full size).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mixbench.errors import DataError

RANKINGS = ("hamming", "cosine")
ENGINES = ("auto", "numpy", "torch")
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


def _pack_bits(x: np.ndarray) -> np.ndarray:
    """Rows of booleans as little-endian uint64 words, one row per row (zero-padded), transposed to
    ``(words, rows)`` so that each word is a contiguous array."""
    packed = np.packbits(x, axis=1, bitorder="little")
    words = max(1, -(-packed.shape[1] // 8))
    out = np.zeros((packed.shape[0], words * 8), dtype=np.uint8)
    out[:, : packed.shape[1]] = packed
    return np.ascontiguousarray(out.view(np.uint64).T)


def _label_bits(q_labels: torch.Tensor, db_labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """Packed label sets (positive entries) of queries and database, or None where that would not give
    :func:`relevance` exactly (single labels: compared directly; negative entries: the label product)."""
    if q_labels.dim() == 1 and db_labels.dim() == 1:
        return None
    if bool((q_labels < 0).any()) or bool((db_labels < 0).any()):
        return None
    c = max(q_labels.shape[1] if q_labels.dim() == 2 else int(q_labels.max()) + 1,
            db_labels.shape[1] if db_labels.dim() == 2 else int(db_labels.max()) + 1)
    return (_pack_bits(label_matrix(q_labels, c).numpy() > 0), _pack_bits(label_matrix(db_labels, c).numpy() > 0))


def _hamming_positions_numpy(
    query: torch.Tensor, database: torch.Tensor, q_labels: torch.Tensor, db_labels: torch.Tensor, rows_per_chunk: int,
) -> Iterator[np.ndarray]:
    """For each query in turn: the 0-based ranks (ascending) of its relevant database items in the
    Hamming ranking with ties by index. CPU, numpy: codes packed into 64-bit words, distances as
    popcounts of XORs (exact small integers), ranked by a stable sort of ``uint8`` keys (numpy's
    radix sort, linear in the database size); chunks of queries share preallocated buffers."""
    bits = query.shape[1]
    qw, dw = _pack_bits(query.numpy() > 0), _pack_bits(database.numpy() > 0)
    nq, nd = qw.shape[1], dw.shape[1]
    key_dtype = np.uint8 if bits <= 255 else np.uint16
    lab = _label_bits(q_labels, db_labels)
    single = q_labels.numpy() if lab is None and q_labels.dim() == 1 and db_labels.dim() == 1 else None
    db_single = db_labels.numpy() if single is not None else None
    step = max(1, min(nq, rows_per_chunk))
    xor = np.empty((step, nd), dtype=np.uint64)
    pop = np.empty((step, nd), dtype=np.uint8)
    dist = np.empty((step, nd), dtype=key_dtype)
    rel = np.empty((step, nd), dtype=bool)
    tmp = np.empty((step, nd), dtype=bool)
    for lo in range(0, nq, step):
        hi = min(nq, lo + step)
        n = hi - lo
        d, x, r = dist[:n], xor[:n], rel[:n]
        for w in range(qw.shape[0]):
            np.bitwise_xor(qw[w, lo:hi, None], dw[w, None, :], out=x)
            if w == 0 and key_dtype == np.uint8:
                np.bitwise_count(x, out=d)
            else:
                np.bitwise_count(x, out=pop[:n])
                if w == 0:
                    d[...] = pop[:n]
                else:
                    np.add(d, pop[:n], out=d)
        if lab is not None:
            for w in range(lab[0].shape[0]):
                np.bitwise_and(lab[0][w, lo:hi, None], lab[1][w, None, :], out=x)
                np.not_equal(x, 0, out=r if w == 0 else tmp[:n])
                if w:
                    np.logical_or(r, tmp[:n], out=r)
        elif single is not None:
            np.equal(single[lo:hi, None], db_single[None, :], out=r)
        else:
            r[...] = relevance(q_labels[lo:hi], db_labels).numpy()
        for i in range(n):
            yield np.flatnonzero(r[i][np.argsort(d[i], kind="stable")])


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
    engine: str = "auto",
) -> RankingScores:
    """Score ``query`` rows against ``database`` rows (see the module docstring). ``engine``: ``numpy``
    (Hamming ranking of CPU tensors only: popcounts and a radix sort per query), ``torch`` (any ranking,
    any device: a flat stable sort per chunk), ``auto`` (``numpy`` where it applies, else ``torch``)."""
    if ranking not in RANKINGS:
        raise DataError(f"ranking = {ranking!r}: must be one of {', '.join(RANKINGS)}.")
    if engine not in ENGINES:
        raise DataError(f"engine = {engine!r}: must be one of {', '.join(ENGINES)}.")
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
    numpy_ok = ranking == "hamming" and dev.type == "cpu"
    if engine == "numpy" and not numpy_ok:
        raise DataError(f"engine = 'numpy' scores Hamming ranking of CPU tensors; got ranking = {ranking!r} on "
                        f"{dev}. Use engine = 'torch' (or 'auto').")
    use_numpy = numpy_ok and engine != "torch"
    ks = sorted({int(k) for k in ks if int(k) >= 1})
    kcap = [min(k, nd) for k in ks]
    pr_points = max(1, min(int(pr_points), nd))
    cut = torch.unique(torch.ceil(torch.arange(1, pr_points + 1, dtype=torch.float64) * nd / pr_points)
                       .to(torch.long)).clamp(1, nd)
    if use_numpy:
        return _scores_numpy(_hamming_positions_numpy(
            as_codes(query), as_codes(database.to(dev)), q_labels.cpu(), db_labels.cpu(),
            max(1, int(chunk_elements) // nd)), nq, nd, ks, kcap, cut.numpy(), keep_ap, at_r)
    return _scores_torch(query, database, q_labels, db_labels, ranking, ks, kcap, cut.to(dev), chunk_elements,
                         keep_ap, at_r)


def _scores_numpy(positions: Iterator[np.ndarray], nq: int, nd: int, ks: list[int], kcap: list[int], cut: np.ndarray,
                  keep_ap: bool, at_r: bool) -> RankingScores:
    """The figures from each query's ranks of relevant items ``p`` (0-based, ascending): the m-th
    relevant item sits at rank ``p_m + 1`` with ``m`` relevant items in the top ``p_m + 1``."""
    ap_all = np.zeros(nq)
    apr_all = np.zeros(nq)
    pk_sum = np.zeros(len(ks))
    pr_p = np.zeros(len(cut))
    pr_r = np.zeros(len(cut))
    kc = np.asarray(kcap, dtype=np.int64)
    kdiv = np.asarray(ks, dtype=np.float64)
    cutf = cut.astype(np.float64)
    n_with = 0
    for i, p in enumerate(tqdm(positions, total=nq, desc="mAP", unit="query", leave=False,
                                  disable=True if nq < 5000 else None)):
        big_r = len(p)
        if ks:
            pk_sum += np.searchsorted(p, kc) / kdiv  # relevant items among ranks < k
        at = np.searchsorted(p, cut)
        pr_p += at / cutf
        if big_r == 0:
            continue
        n_with += 1
        pr_r += at / big_r
        w = np.arange(1, big_r + 1, dtype=np.float64) / (p + 1.0)
        ap_all[i] = w.sum() / big_r
        if at_r:
            apr_all[i] = w[: int(np.searchsorted(p, big_r))].sum() / big_r
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
        ap=torch.from_numpy(ap_all) if keep_ap else None,
    )


def _scores_torch(query: torch.Tensor, database: torch.Tensor, q_labels: torch.Tensor, db_labels: torch.Tensor,
                  ranking: str, ks: list[int], kcap: list[int], cut: torch.Tensor, chunk_elements: int,
                  keep_ap: bool, at_r: bool) -> RankingScores:
    """The figures in query chunks on the inputs' device (a flat stable sort per chunk)."""
    nq, nd = int(query.shape[0]), int(database.shape[0])
    dev = query.device
    if ranking == "hamming":
        q_all, d_all = as_codes(query), as_codes(database.to(dev))
    else:
        q_all = torch.nn.functional.normalize(query.to(torch.float32), dim=1)
        d_all = torch.nn.functional.normalize(database.to(dev, torch.float32), dim=1)
    db_labels = db_labels.to(dev)
    q_labels = q_labels.to(dev)
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
