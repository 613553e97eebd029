"""What the benchmark scripts share (they run as ``python bench/<name>.py``, so this folder is on sys.path)."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any


def mean_std(values: list[float]) -> str:
    """``"mean ± sample std"`` to 3 decimals; one value alone, ``—`` for none."""
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "—"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def setup_logging() -> None:
    """INFO lines with a clock for the script's own progress; the stages' chatter at WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("train", "embed", "unpair", "prep", "mixbench"):
        logging.getLogger(name).setLevel(logging.WARNING)


def benchmark_store(path: Path, work: Path, ratio: float | None = None) -> tuple[str, Path, Any]:
    """Build (or reuse) a recipe's benchmark store through the real stages (``mixbench run --until
    unpair``) under ``work``: ``(name, root, recipe)``, the store being ``root / "unpair"``. ``ratio``
    overrides ``[unpair] ratio`` and is added to the name (``"<recipe> r=<ratio>"``)."""
    from mixbench.recipe import load_recipe
    from mixbench.run import run_recipe

    recipe = load_recipe(path)
    name = recipe.name
    if ratio is not None:
        recipe = recipe.with_overrides({"unpair": {"ratio": ratio}})
        name = f"{recipe.name} r={ratio:g}"
    root = work / name.replace(" ", "-")
    run_recipe(recipe, out=root, until="unpair")
    return name, root, recipe
