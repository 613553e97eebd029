"""Multi-label → single-label selection for clustering.

Clustering metrics need one class per sample. Multi-label sets (MIRFlickr-25K, NUS-WIDE) are
reduced the way NUS-WIDE-10K was built for cross-modal retrieval and for DM2C: take the ``K``
concepts with the most samples, keep the samples carrying **exactly one** of those ``K``
(concepts outside the ``K`` do not matter), and draw a fixed number per concept with a seeded
generator. NUS-WIDE-10K is ``top_k = 10, per_class = 1000``.

The rule, the concepts kept, the counts and the seed go into the manifest ``info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixbench.errors import DataError

RULE = "top-k concepts, exactly one of them per sample, fixed count per class (NUS-WIDE-10K rule)"


@dataclass(frozen=True)
class Selection:
    """Result of :func:`select_single_label`.

    ``rows``: indices into the input rows (ascending); ``labels``: 0-based single labels of those
    rows (into ``classes``); ``classes``: names of the kept concepts in their original order;
    ``info``: the record for the manifest."""

    rows: np.ndarray
    labels: np.ndarray
    classes: list[str]
    info: dict[str, Any]


def check_multihot(labels: Any, source: str, field_name: str = "label") -> np.ndarray:
    """A 2-D 0/1 matrix as uint8, or a DataError naming the first bad row and column."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise DataError(f"{source} [{field_name}]: expected a rows × classes 0/1 matrix, got shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{source} [{field_name}]: expected numbers 0/1, got dtype {arr.dtype}.")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"{source}:{r} [{field_name}]: column {c} is {arr[r, c].item()!r}; multi-hot labels must be 0 or 1."
        )
    return arr.astype(np.uint8)


def select_single_label(
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    top_k: int,
    per_class: int = 0,
    rng: np.random.Generator,
    seed: int | None = None,
    source: str = "labels",
) -> Selection:
    """Apply the NUS-WIDE-10K rule to multi-hot ``labels`` (rows × concepts).

    ``top_k``: how many of the most frequent concepts to keep (ties: lower concept index first).
    ``per_class``: rows drawn per kept concept without replacement (0: keep every eligible row).
    A concept with fewer eligible rows than ``per_class`` is a DataError that names the counts."""
    y = check_multihot(labels, source)
    n, c = y.shape
    if len(classes) != c:
        raise DataError(f"{source}: {c} label columns but {len(classes)} class names.")
    if not 1 <= top_k <= c:
        raise DataError(f"{source}: single_label_top_k = {top_k} must be in 1..{c} (the number of concepts).")
    freq = y.sum(axis=0).astype(np.int64)
    # the K largest concepts: sort by count descending, then by index ascending (stable)
    order = np.lexsort((np.arange(c), -freq))
    kept = np.sort(order[:top_k])
    sub = y[:, kept]
    exactly_one = sub.sum(axis=1) == 1
    eligible = {int(k): np.flatnonzero(exactly_one & (sub[:, j] == 1)) for j, k in enumerate(kept)}
    chosen: list[np.ndarray] = []
    for k in kept:
        rows = eligible[int(k)]
        if per_class:
            if len(rows) < per_class:
                counts = ", ".join(f"{classes[int(q)]} {len(eligible[int(q)])}" for q in kept)
                raise DataError(
                    f"{source}: concept {classes[int(k)]!r} has {len(rows)} samples carrying exactly one of the "
                    f"top {top_k} concepts, fewer than single_label_per_class = {per_class} (eligible: {counts}). "
                    "Lower single_label_per_class or single_label_top_k."
                )
            rows = np.sort(rng.choice(rows, size=per_class, replace=False))
        chosen.append(rows)
    all_rows = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    new_label = sub[all_rows].argmax(axis=1).astype(np.int64)
    kept_names = [str(classes[int(k)]) for k in kept]
    info = {
        "rule": RULE,
        "top_k": int(top_k),
        "per_class": int(per_class),
        "seed": seed,
        "concepts_kept": kept_names,
        "concept_index": [int(k) for k in kept],
        "concept_frequency": {str(classes[int(k)]): int(freq[k]) for k in kept},
        "eligible": {str(classes[int(k)]): int(len(eligible[int(k)])) for k in kept},
        "counts": {name: int((new_label == j).sum()) for j, name in enumerate(kept_names)},
        "rows_in": int(n),
        "rows_kept": int(len(all_rows)),
    }
    return Selection(rows=all_rows.astype(np.int64), labels=new_label, classes=kept_names, info=info)
