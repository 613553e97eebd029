"""A benchmark store loaded for cross-modal retrieval: training rows (linked pairs and unpaired
rows apart), queries and a database, labels single or multi-hot.

**Protocol.** Training rows come from ``train``. Queries come from ``test`` (``query_split``);
the database is the store's ``database`` split when it has one (the DCMH/DADH adapters' split:
MIRFlickr 2,000 / NUS-WIDE 2,100 queries against a database that overlaps train), else the query
split itself (test-as-query-and-database: Wikipedia, UCI). I→T: image rows of the query split
against text rows of the database; T→I the other way round. Fallbacks, recorded in
``protocol["notes"]`` and the report: no ``test`` split → ``val`` if present, else the training
split is used as queries and database (in-sample, optimistic).

**Rows.** A linked pair is a pair id present (``pair >= 0``) in both modalities' training rows.
Every other training row is an *unpaired* row of its modality: the surviving half of a ``drop``,
both halves of a ``decouple``, the present half of a ``zero`` (rows with ``present = 0``, the
zero-filled halves, are not loaded at all: they hold no data). Query and database rows are every
present row of their split, linked or not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mixbench.errors import DataError

from ..data import two_feature_modalities

log = logging.getLogger(__name__)


@dataclass
class Rows:
    """The present rows of one modality in one split."""

    x: torch.Tensor  # (n, d) float32
    y: torch.Tensor  # (n,) int64 or (n, C) uint8 multi-hot
    pair: torch.Tensor  # (n,) int64, -1 = not linked
    ids: np.ndarray

    def n(self) -> int:
        return int(self.x.shape[0])


@dataclass
class RetrievalSplit:
    """One split: rows per modality (the attribute names the train stage reads: ``n(m)``)."""

    rows: dict[str, Rows]

    def n(self, modality: str) -> int:
        return self.rows[modality].n()


@dataclass
class RetrievalData:
    modalities: list[str]
    classes: list[str]
    multilabel: bool
    splits: dict[str, RetrievalSplit]
    dims: dict[str, int]
    protocol: dict[str, Any]
    store_info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def train(self) -> RetrievalSplit:
        return self.splits[self.protocol["train"]]

    @property
    def query(self) -> RetrievalSplit:
        return self.splits[self.protocol["query"]]

    @property
    def database(self) -> RetrievalSplit:
        return self.splits[self.protocol["database"]]

    def linked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices ``(i_a, i_b)`` of the training pairs still linked, in pair-id order."""
        a, b = (self.train.rows[m] for m in self.modalities)
        common, ia, ib = np.intersect1d(a.pair.cpu().numpy(), b.pair.cpu().numpy(), return_indices=True)
        keep = common >= 0
        dev = a.x.device
        return torch.as_tensor(ia[keep], device=dev), torch.as_tensor(ib[keep], device=dev)

    def label_matrix(self, y: torch.Tensor) -> torch.Tensor:
        """Labels as float multi-hot rows (single labels one-hot)."""
        if y.dim() == 2:
            return y.to(torch.float32)
        return torch.nn.functional.one_hot(y.clamp_min(0), self.n_classes).to(torch.float32) * (y >= 0)[:, None]


def labelled(y: torch.Tensor) -> torch.Tensor:
    """Bool per row: the row has a label (single: ``>= 0``; multi-hot: at least one class)."""
    return (y >= 0) if y.dim() == 1 else (y.sum(1) > 0)


ZERO_INPUTS = ("skip", "zero-vector")


def load_retrieval(store: Any, device: torch.device | str = "cpu", query_split: str = "test",
                   zero_input: str = "skip") -> RetrievalData:
    """Load the training, query and database splits of a benchmark (or features) store.

    ``zero_input``: what the training split's zero-filled halves (``mode = "zero"``, ``present = 0``)
    become. ``skip``: they are not loaded; the present half is an unpaired row (as under ``drop``).
    ``zero-vector`` (UMML's form): they are loaded as rows whose features are the store's zeros,
    with their pair's label, and each is linked to its present partner (the row at the same position
    in the other modality's table: ``zero`` keeps both rows in place), so every broken pair stays a
    pair with one all-zero input. Query and database splits always skip them (nothing to retrieve)."""
    if zero_input not in ZERO_INPUTS:
        raise DataError(f"zero_input = {zero_input!r}: must be one of {', '.join(ZERO_INPUTS)}.")
    from mixbench.store.shards import Store

    if not isinstance(store, Store):
        store = Store(store)
    mods = two_feature_modalities(store, "cross-modal retrieval")
    if "train" not in store.splits:
        raise DataError(f"{store.path}: no 'train' split; retrieval methods train on it. Splits: {store.splits}.")
    notes: list[str] = []
    query = query_split
    if query not in store.splits:
        fallback = "val" if "val" in store.splits else "train"
        notes.append(f"no '{query}' split: queries come from '{fallback}'"
                     + (" (in-sample: the model was trained on these rows, figures are optimistic)" if fallback == "train" else ""))
        query = fallback
    database = "database" if "database" in store.splits else query
    notes.append(f"queries: '{query}' rows; database: '{database}' rows"
                 + (" (the same rows: test-as-query-and-database)" if database == query else ""))
    splits: dict[str, RetrievalSplit] = {}
    for split in dict.fromkeys(("train", query, database)):
        tables = {}
        for m in mods:
            cols = ["id", "label", "pair", "feat"] + (["present"] if store.has_column(m, "present") else [])
            tables[m] = store.load(split, m, cols)
        keeps = {m: np.ones(len(t["id"]), dtype=bool) if "present" not in t else t["present"].astype(bool)
                 for m, t in tables.items()}
        pairs = {m: t["pair"].astype(np.int64) for m, t in tables.items()}
        if split == "train" and zero_input == "zero-vector" and not all(k.all() for k in keeps.values()):
            keeps, pairs = _zero_vector_pairs(store.path, tables, keeps, pairs, mods)
        rows = {}
        for m, t in tables.items():
            keep = keeps[m]
            lab = t["label"][keep]
            rows[m] = Rows(
                x=torch.as_tensor(np.ascontiguousarray(t["feat"][keep]), dtype=torch.float32, device=device),
                y=torch.as_tensor(lab if lab.ndim == 2 else lab.astype(np.int64), device=device),
                pair=torch.as_tensor(pairs[m][keep], device=device),
                ids=t["id"][keep],
            )
        splits[split] = RetrievalSplit(rows)
    if zero_input == "zero-vector":
        notes.append("zero-filled halves of the training split enter as zero vectors linked to their partner "
                     "(zero_input = 'zero-vector')")
    for n in notes:
        log.info("retrieval protocol: %s", n)
    return RetrievalData(
        modalities=mods, classes=store.classes, multilabel=store.multilabel, splits=splits,
        dims={m: store.feat_dim(m) for m in mods},
        protocol={"train": "train", "query": query, "database": database, "notes": notes},
        store_info=store.info, warnings=[n for n in notes if n.startswith("no ")],
    )


def _zero_vector_pairs(path: Any, tables: dict[str, dict[str, np.ndarray]], keeps: dict[str, np.ndarray],
                       pairs: dict[str, np.ndarray], mods: list[str]) -> tuple[dict[str, np.ndarray],
                                                                            dict[str, np.ndarray]]:
    """Keep the zero-filled halves and link each to the row at its position in the other table
    (a fresh pair id above the store's)."""
    a, b = mods
    n = len(tables[a]["id"])
    if len(tables[b]["id"]) != n:
        raise DataError(f"{path}: zero_input = 'zero-vector' needs the two modalities' training tables row-aligned "
                        f"(a 'zero' store); they have {n} and {len(tables[b]['id'])} rows. Use zero_input = 'skip'.")
    half = keeps[a] != keeps[b]  # one half present, the other zero-filled
    la, lb = tables[a]["label"][half], tables[b]["label"][half]
    if (keeps[a] | keeps[b]).sum() != n or not bool((la == lb).all()):
        raise DataError(f"{path}: zero_input = 'zero-vector': the zero-filled rows are not aligned with their "
                        "partners (a row missing in both tables, or partners with different labels); this store was "
                        "not written by unpair's 'zero' mode. Use zero_input = 'skip'.")
    fresh = max(int(pairs[a].max(initial=-1)), int(pairs[b].max(initial=-1))) + 1
    new_ids = fresh + np.arange(int(half.sum()), dtype=np.int64)
    out = {m: pairs[m].copy() for m in mods}
    for m in mods:
        out[m][half] = new_ids
    return {m: np.ones(n, dtype=bool) for m in mods}, out
