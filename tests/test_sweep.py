"""mixbench.sweep: cells run several at a time (``jobs``) give exactly the results of running them
one by one (short schedule, real Wikipedia data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixbench.errors import ConfigError
from mixbench.sweep import run_sweep

REPO = Path(__file__).resolve().parent.parent
SHORT = {"train": {"pretrain_epochs": 2, "epochs": 2, "n_init": 2, "plots": False, "checkpoint_every": 0}}


def test_cells_in_parallel_equal_cells_one_by_one(tmp_path: Path) -> None:
    recipe = REPO / "data" / "recipes" / "wikipedia.toml"
    grid = {"ratios": [0.5, 1.0], "strategies": ["random"], "seeds": 1, "overrides": SHORT}
    solo = run_sweep(recipe, out=tmp_path / "solo", jobs=1, **grid)
    both = run_sweep(recipe, out=tmp_path / "jobs", jobs=2, **grid)
    assert [(c["strategy"], c["ratio"], c["seed"]) for c in both["cells"]] == [("random", 0.5, 0), ("random", 1.0, 0)]
    for a, b in zip(solo["cells"], both["cells"]):
        assert a["methods"] == b["methods"]  # bit for bit: the same runs, in other processes
        assert b["seconds"] > 0 and b["peak_rss_mib"] > 0
    assert solo["table"] == both["table"]
    with pytest.raises(ConfigError, match="--jobs 0: must be at least 1"):
        run_sweep(recipe, out=tmp_path / "bad", jobs=0, **grid)
