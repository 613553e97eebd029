"""The UMML experiment as one command: a short `mixbench sweep` cell grid over strategy × mode with
mAP as the metric, on the real Wikipedia features (what CI runs of it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixbench.cli import main
from mixbench.errors import ConfigError
from mixbench.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_retrieval_sweep_over_strategies_and_modes(repo_root: Path, wikipedia_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    recipe = repo_root / "data" / "recipes" / "wikipedia-retrieval.toml"
    # no --metric: a retrieval recipe defaults to map_mean
    rc = main(["sweep", str(recipe), "--ratio", "0.5", "--strategy", "random,positional", "--mode", "drop,zero",
               "--seeds", "1", "--out", str(tmp_path / "sw"),
               "--set", "train.method_options={epochs = 2}", "--set", "train.plots=false", "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("test mAP (I→T and T→I averaged) (mean ± std over 1 seed(s))")
    for label in ("drop · random", "drop · positional", "zero · random", "zero · positional"):
        assert f"| {label} | retrieval-twotower |" in out
    sweep = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert sweep["method"] == "retrieval-twotower" and sweep["modes"] == ["drop", "zero"]
    assert len(sweep["cells"]) == 4 and (tmp_path / "sw" / "sweep.png").stat().st_size > 1000
    for cell in sweep["cells"]:
        m = cell["methods"]["retrieval-twotower"]["test"]
        assert 0.12 < m["map_mean"] < 0.35
        assert Path(cell["run_dir"]).parts[-5] == cell["mode"]
    # random, 1,087 of 2,173 pairs broken in both modes: the same pairs stay linked, so drop and zero
    # train on the same pairs (the pairs-only two-tower ignores the unpaired rows) and score the same
    by = {c["strategy"]: c["methods"]["retrieval-twotower"]["test"]["map_mean"] for c in sweep["cells"]}
    assert by["drop · random"] == pytest.approx(by["zero · random"], abs=1e-9)


def test_bad_metric_and_mode(repo_root: Path) -> None:
    recipe = repo_root / "data" / "recipes" / "wikipedia-retrieval.toml"
    with pytest.raises(ConfigError, match="--metric 'mAP'"):
        run_sweep(recipe, ratios=[0.5], strategies=["random"], metric="mAP")
    with pytest.raises(ConfigError, match="--mode 'zeros'"):
        run_sweep(recipe, ratios=[0.5], strategies=["random"], metric="map_mean", modes=["zeros"])
