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


def load_retrieval(store: Any, device: torch.device | str = "cpu", query_split: str = "test") -> RetrievalData:
    """Load the training, query and database splits of a benchmark (or features) store."""
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
        rows = {}
        for m in mods:
            cols = ["id", "label", "pair", "feat"] + (["present"] if store.has_column(m, "present") else [])
            t = store.load(split, m, cols)
            keep = np.ones(len(t["id"]), dtype=bool) if "present" not in t else t["present"].astype(bool)
            lab = t["label"][keep]
            rows[m] = Rows(
                x=torch.as_tensor(np.ascontiguousarray(t["feat"][keep]), dtype=torch.float32, device=device),
                y=torch.as_tensor(lab if lab.ndim == 2 else lab.astype(np.int64), device=device),
                pair=torch.as_tensor(t["pair"][keep].astype(np.int64), device=device),
                ids=t["id"][keep],
            )
        splits[split] = RetrievalSplit(rows)
    for n in notes:
        log.info("retrieval protocol: %s", n)
    return RetrievalData(
        modalities=mods, classes=store.classes, multilabel=store.multilabel, splits=splits,
        dims={m: store.feat_dim(m) for m in mods},
        protocol={"train": "train", "query": query, "database": database, "notes": notes},
        store_info=store.info, warnings=[n for n in notes if n.startswith("no ")],
    )
