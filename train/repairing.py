"""Re-pairing scores: how well a method that re-pairs unlinked halves found their partners.

A ``decouple`` benchmark store keeps both halves of every broken pair, unlinked (pair = -1), and its
selection file (``selection.h5``, written by the unpair stage) records, per split, every broken pair's
row ids in both modalities: the *hidden partner* of each decoupled row. A method that re-pairs (MvCLN,
SURE) is scored on those rows with

- ``car``: the category alignment rate (the MvCLN paper's CAR): share of re-paired rows whose chosen
  partner has the same class;
- ``partner_found``: share of decoupled rows whose chosen partner is the hidden partner;
- ``partner_rank``: mean rank (1 = nearest) of the hidden partner among the candidate rows the
  method chose from, by the method's own distance; ``partner_rank_chance`` is what a random order
  gives ((candidates + 1) / 2).

Labels and hidden partners are used only for these scores, never by the methods.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import h5py
import numpy as np
import torch

from mixbench.errors import StoreError

from .data import BenchmarkData

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.h5"


def hidden_partners(data: BenchmarkData) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Per split, row indices ``(i_a, i_b)`` of the decoupled rows and their hidden partners, or None
    (with one log line) when the store does not record them."""
    if data.path is None:
        log.info("re-pairing scores: the benchmark was not loaded from a store; partner recovery skipped.")
        return None
    from mixbench.store.shards import Store

    try:
        store = Store(data.path)
    except StoreError as exc:
        log.info("re-pairing scores: %s; partner recovery skipped.", exc)
        return None
    names = [f["file"] for f in store.manifest.get("files", [])]
    if SELECTION_FILE not in names:
        log.info("re-pairing scores: %s has no %s; partner recovery skipped (CAR still reported).", store.path, SELECTION_FILE)
        return None
    a, b = data.modalities[:2]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        path = store.file(SELECTION_FILE)
    except StoreError as exc:  # listed but missing or damaged
        log.info("re-pairing scores: %s; partner recovery skipped (CAR still reported).", exc)
        return None
    with h5py.File(path, "r") as f:
        if f.attrs.get("mode") != "decouple":
            log.info("re-pairing scores: %s is a '%s' store, not decouple; no hidden partners to recover.",
                     store.path, f.attrs.get("mode"))
            return None
        mods = json.loads(f.attrs.get("modalities", "[]"))
        if mods[:2] != [a, b]:
            log.info("re-pairing scores: %s lists modalities %s, the benchmark %s; partner recovery skipped.",
                     SELECTION_FILE, mods, data.modalities)
            return None
        for split, s in data.splits.items():
            if split not in f or "broken" not in f[split] or "id" not in f[split]:
                log.info("re-pairing scores: %s has no hidden partners for split '%s'; skipped there.", SELECTION_FILE, split)
                continue
            g = f[split]
            broken = np.asarray(g["broken"][()], dtype=bool)
            ids_a = np.asarray(g["id"][a][()][broken]).astype(str)
            ids_b = np.asarray(g["id"][b][()][broken]).astype(str)
            ra = _positions(np.asarray(s.ids[a]).astype(str), ids_a)
            rb = _positions(np.asarray(s.ids[b]).astype(str), ids_b)
            keep = (ra >= 0) & (rb >= 0)
            if not keep.all():
                log.info("re-pairing scores: split '%s': %d hidden partners name rows the benchmark lacks; those are "
                         "left out.", split, int((~keep).sum()))
            out[split] = (ra[keep], rb[keep])
    return out


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each ``wanted`` id in ``ids`` (-1 when absent)."""
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], wanted)
    pos = np.clip(pos, 0, max(len(ids) - 1, 0))
    if len(ids) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    found = ids[order][pos] == wanted
    return np.where(found, order[pos], -1).astype(np.int64)


def repair_scores(
    *,
    rows_a: np.ndarray,
    chosen_b: np.ndarray,
    y_a: np.ndarray,
    y_b: np.ndarray,
    dist: torch.Tensor | None = None,
    pool_b: np.ndarray | None = None,
    partners: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Scores of one split's re-pairing: ``rows_a[k]`` was re-paired with ``chosen_b[k]``.

    ``dist`` (len(rows_a) × len(pool_b)): the method's distances from each re-paired a-row to the
    candidate b-rows ``pool_b`` (for the partner rank); ``partners``: the hidden partners
    (:func:`hidden_partners`), or None."""
    out: dict[str, Any] = {"repaired": int(len(rows_a))}
    if len(rows_a) == 0:
        return out
    out["car"] = float(np.mean(y_a[rows_a] == y_b[chosen_b]))
    if partners is None:
        return out
    pa, pb = partners
    true_b = np.full(int(max(rows_a.max(), pa.max() if len(pa) else 0)) + 1, -1, dtype=np.int64)
    true_b[pa] = pb
    has = true_b[rows_a] >= 0
    out["with_hidden_partner"] = int(has.sum())
    if not has.any():
        return out
    out["partner_found"] = float(np.mean(chosen_b[has] == true_b[rows_a[has]]))
    if dist is not None and pool_b is not None:
        col = {int(r): i for i, r in enumerate(pool_b)}
        idx = np.array([col.get(int(r), -1) for r in true_b[rows_a[has]]])
        ok = idx >= 0
        if ok.any():
            d = dist[torch.as_tensor(np.flatnonzero(has)[ok], device=dist.device)]
            d_true = d.gather(1, torch.as_tensor(idx[ok], device=dist.device).view(-1, 1))
            rank = (d < d_true).sum(1).float() + 1.0
            out["partner_rank"] = float(rank.mean())
            out["partner_rank_chance"] = (len(pool_b) + 1) / 2
    return out
