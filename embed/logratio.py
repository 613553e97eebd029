"""The centred log-ratio (CLR) transform for compositional features (``[embed] log_ratio``).

Topic proportions (the Wikipedia text's 10 LDA topics), word or visual-word histograms and other
rows of non-negative parts carry their information in the *ratios* between parts. The centred
log-ratio (Aitchison, *The Statistical Analysis of Compositional Data*, 1986) maps a composition
to Euclidean coordinates where those ratios are distances:

    p = x / Σ x                       (closure: each row sums to 1)
    clr(x) = log(p + ε) − mean_j log(p_j + ε)

``ε`` (``log_ratio_eps``) keeps zero parts finite. The output rows sum to 0 (one dimension is
redundant; the PCA that follows finds it as a zero-variance component).

Measured on Wikipedia's text (10 LDA proportions; test rows, k-means, ``train.headroom``): 0.613 ACC
after CLR + PCA against 0.558 after PCA of the raw proportions. The gain needs the PCA *unwhitened*:
with ``whiten = true`` both give 0.558, since whitening equalises the components CLR re-weights.

Rows that are not compositions (a negative or non-finite part, or all parts zero) are refused
with the row's id, never clipped silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixbench.errors import DataError


def clr(feat: np.ndarray, *, eps: float, ids: Sequence[str] | np.ndarray | None = None, where: str = "") -> np.ndarray:
    """Centred log-ratio of each row of ``feat`` (float64 out). ``ids``/``where`` name bad rows in errors."""
    x = np.asarray(feat, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"{where}: log_ratio needs a 2-D feature table, got shape {x.shape}.")
    sums = x.sum(axis=1)
    # One pass over the sums screens NaN/inf; negatives need their own check (they can cancel out).
    bad = ~np.isfinite(sums) | (sums <= 0) | (x.min(axis=1, initial=0.0) < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = x[i]
        what = ("a non-finite part" if not np.isfinite(row).all() else
                "a negative part" if (row < 0).any() else "all parts zero")
        name = f"id '{ids[i]}'" if ids is not None else f"row {i}"
        raise DataError(
            f"{where}: {name} (row {i} of the shard, field 'feat') has {what}; [embed] log_ratio needs "
            f"compositions (non-negative parts, positive sum; {int(bad.sum())} such row(s) here). Fix the "
            "features at prep, or drop this modality from log_ratio."
        )
    logs = np.log(x / sums[:, None] + eps)
    return logs - logs.mean(axis=1, keepdims=True)


__all__ = ["clr"]
