"""What the benchmark scripts share (they run as ``python bench/<name>.py``, so this folder is on sys.path)."""

from __future__ import annotations

import statistics


def mean_std(values: list[float]) -> str:
    """``"mean ± sample std"`` to 3 decimals; one value alone, ``—`` for none."""
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "—"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"
