"""A benchmark store loaded onto a device: the input of DM2C and of the k-means baselines.

Every row of a benchmark store is one *instance* of one modality. Rows of a pair that is still
linked (``pair >= 0`` in both tables) are two instances; faithful DM2C treats them like any
other row, variants may use the link (:meth:`SplitTensors.linked`). Rows zero-filled by the
``zero`` unpairing mode (``present == 0``) are not instances and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixbench.errors import DataError, StoreError


EVAL_SPLITS = ("train", "test")
"""The splits DM2C trains and evaluates on (k-means fitted on train, applied to test)."""


@dataclass
class SplitTensors:
    """One split: per modality, features (float32, on the device), labels, pair ids and row ids."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    pair: dict[str, torch.Tensor]
    ids: dict[str, np.ndarray]

    @property
    def modalities(self) -> list[str]:
        return list(self.x)

    def n(self, modality: str | None = None) -> int:
        if modality is not None:
            return int(self.x[modality].shape[0])
        return sum(int(v.shape[0]) for v in self.x.values())

    def pooled(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All instances stacked (modalities in order): features, labels, modality index (0, 1, ...).

        Needs every modality at the same feature dimension (the embed stage's shared PCA dim)."""
        dims = {m: int(v.shape[1]) for m, v in self.x.items()}
        if len(set(dims.values())) != 1:
            raise DataError(
                f"modalities have different feature dims {dims}; pooled clustering and DM2C need one shared "
                "dimension: set [embed] dim to a common value."
            )
        xs = [self.x[m] for m in self.modalities]
        ys = [self.y[m] for m in self.modalities]
        flags = [torch.full((len(v),), i, dtype=torch.long, device=v.device) for i, v in enumerate(xs)]
        return torch.cat(xs), torch.cat(ys), torch.cat(flags)

    def linked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices ``(i_a, i_b)`` into the two modalities of the pairs still linked (pair >= 0 in both)."""
        a, b = self.modalities[:2]
        pa, pb = self.pair[a], self.pair[b]
        common, ia, ib = np.intersect1d(pa.cpu().numpy(), pb.cpu().numpy(), assume_unique=False, return_indices=True)
        keep = common >= 0
        dev = pa.device
        return torch.as_tensor(ia[keep], device=dev), torch.as_tensor(ib[keep], device=dev)


def two_feature_modalities(store: Any, who: str) -> list[str]:
    """The store's two modalities, each with a ``feat`` column; else a one-line error naming ``who`` needs them."""
    mods = store.modalities
    if len(mods) != 2:
        raise DataError(f"{store.path}: {who} needs exactly two modalities, the store has {mods}.")
    for m in mods:
        if not store.has_column(m, "feat"):
            raise StoreError(f"{store.path}: modality '{m}' has no 'feat' column; run embed (and unpair) first.")
    return mods


@dataclass
class BenchmarkData:
    modalities: list[str]
    classes: list[str]
    splits: dict[str, SplitTensors]
    dims: dict[str, int]
    store_info: dict[str, Any]
    path: str | None = None
    """The store the benchmark was loaded from (None when built in memory): methods read its
    auxiliary files, e.g. the selection file for the re-pairing scores (:mod:`train.repairing`)."""

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_store(cls, store: Any, device: torch.device | str = "cpu", splits: tuple[str, ...] | None = None) -> BenchmarkData:
        """Load a benchmark (or features) store with ``feat`` columns onto ``device``: the given
        ``splits``, else the ones DM2C uses (train, and test when present; e.g. a retrieval
        ``database`` split is not loaded)."""
        from mixbench.store.shards import Store

        if not isinstance(store, Store):
            store = Store(store)
        if store.multilabel:
            raise DataError(
                f"{store.path}: multi-label store; clustering metrics need one label per row. Select single-label "
                "rows at prep (prep.multilabel) first."
            )
        mods = two_feature_modalities(store, "DM2C")
        out: dict[str, SplitTensors] = {}
        for split in splits or tuple(s for s in EVAL_SPLITS if s in store.splits):
            xs, ys, ps, ids = {}, {}, {}, {}
            for m in mods:
                cols = ["id", "label", "pair", "feat"] + (["present"] if store.has_column(m, "present") else [])
                t = store.load(split, m, cols)
                keep = np.ones(len(t["id"]), dtype=bool) if "present" not in t else t["present"].astype(bool)
                xs[m] = torch.as_tensor(np.ascontiguousarray(t["feat"][keep]), dtype=torch.float32, device=device)
                ys[m] = torch.as_tensor(t["label"][keep], dtype=torch.long, device=device)
                ps[m] = torch.as_tensor(t["pair"][keep], dtype=torch.long, device=device)
                ids[m] = t["id"][keep]
            out[split] = SplitTensors(xs, ys, ps, ids)
        return cls(
            modalities=mods,
            classes=store.classes,
            splits=out,
            dims={m: store.feat_dim(m) for m in mods},
            store_info=store.info,
            path=str(store.path),
        )
