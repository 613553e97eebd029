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


def test_methods_in_one_table_and_plot(tmp_path: Path) -> None:
    """A method axis: DM2C, dm2c-linked, MvCLN, mvcln-plus and SURE trained on each cell's one decouple store,
    beside the k-means baselines; mvcln and sure refuse ratio 1 (no link) as a "—"; --jobs 2 = one at a time."""
    import json

    from mixbench.cli import main

    recipe = REPO / "data" / "recipes" / "uci-mfeat.toml"
    small = "{hiddens = [32], epochs = 2, neg_prop = 3, batch_size = 128, n_init = 2}"
    argv = ["sweep", str(recipe), "--ratio", "0.5,1", "--strategy", "random", "--seeds", "1",
            "--methods", "dm2c,dm2c-linked,mvcln,mvcln-plus,sure", "--method-options", f"mvcln={small}",
            "--method-options", f"sure={small}", "--set", "unpair.mode=decouple", "--set", "train.pretrain_epochs=2",
            "--set", "train.epochs=2", "--set", "train.n_init=2", "--set", "train.plots=false"]
    assert main(argv + ["--out", str(tmp_path / "solo"), "--jobs", "2"]) == 0
    solo = json.loads((tmp_path / "solo" / "sweep.json").read_text())
    assert solo["methods"] == ["dm2c", "dm2c-linked", "mvcln", "mvcln-plus", "sure"]
    assert solo["method_configs"]["mvcln-plus"]["method_options"]["variant"] == "mvcln-plus"
    assert solo["method_configs"]["dm2c-linked"]["variant"] == "dm2c-linked"
    half, full = solo["cells"]
    assert set(half["methods"]) >= {"dm2c", "dm2c-linked", "mvcln", "mvcln-plus", "sure", "kmeans-pooled", "kmeans-linked"}
    assert half["methods"]["dm2c"] != half["methods"]["dm2c-linked"] and not half["refused"]
    assert set(full["refused"]) == {"mvcln", "mvcln-plus", "sure"} and "linked pair" in full["refused"]["mvcln"]
    assert {"dm2c", "dm2c-linked", "kmeans-pooled"} <= set(full["methods"]) and "kmeans-linked" not in full["methods"]
    # one at a time, in this process (two of the methods, the r = 0.5 cell): the same rows, bit for bit
    i = argv.index("--methods")
    one = argv[:i + 1] + ["dm2c-linked,mvcln-plus"] + argv[i + 2:]
    one[one.index("0.5,1")] = "0.5"
    assert main(one + ["--out", str(tmp_path / "one"), "--jobs", "1"]) == 0
    cell = json.loads((tmp_path / "one" / "sweep.json").read_text())["cells"][0]
    assert cell["methods"] == {k: v for k, v in half["methods"].items() if k not in ("dm2c", "mvcln", "sure")}
    table = (tmp_path / "solo" / "sweep.md").read_text()
    rows = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| random")]
    assert rows[:5] == ["dm2c", "dm2c-linked", "mvcln", "mvcln-plus", "sure"] and "kmeans-linked" in rows
    assert "| random | mvcln | " in table and "— mvcln: refused at r = 1" in table
    assert (tmp_path / "solo" / "sweep.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="no variant"):
        run_sweep(recipe, out=tmp_path / "bad", ratios=[0.5], strategies=["random"], methods=["mvcln:nope"])
    with pytest.raises(ConfigError, match="not a method"):
        run_sweep(recipe, out=tmp_path / "bad", ratios=[0.5], strategies=["random"], methods=["dm2cc"])


def test_batched_sweep_trains_each_seed_group_as_one_program(tmp_path: Path) -> None:
    """--batched: the two seeds of a cell train as one stacked program; each cell's run folder is
    complete (resumed from the stacked run's final checkpoint), its baselines are bit for bit the
    one-by-one sweep's, and its pre-training losses equal the one-by-one run's (float32: the
    adversarial phase then drifts by rounding, which tests/test_dm2c_stacked.py pins in float64)."""
    import csv
    import json

    recipe = REPO / "data" / "recipes" / "wikipedia.toml"
    grid = {"ratios": [0.5, 1.0], "strategies": ["random"], "seeds": 2, "overrides": SHORT}
    solo = run_sweep(recipe, out=tmp_path / "solo", **grid)
    # two workers, reused by every phase: the two r = 0.5 runs stack in one, the two r = 1 runs in the other
    batched = run_sweep(recipe, out=tmp_path / "batched", batched=True, jobs=2, **grid)
    for a, b in zip(solo["cells"], batched["cells"]):
        metrics = json.loads((Path(b["run_dir"]) / "metrics.json").read_text())
        assert metrics["resumed"] is True and metrics["final_epoch"] == 1
        rows_a = list(csv.DictReader((Path(a["run_dir"]) / "epochs.csv").open()))
        rows_b = list(csv.DictReader((Path(b["run_dir"]) / "epochs.csv").open()))
        assert len(rows_b) == len(rows_a) == 2 + 2 + 2  # two pre-training phases, joint
        for ra, rb in zip(rows_a, rows_b):
            assert (ra["phase"], ra["epoch"], ra["steps"]) == (rb["phase"], rb["epoch"], rb["steps"])
            if ra["phase"].startswith("pretrain"):
                assert abs(float(ra["rec"]) - float(rb["rec"])) <= 1e-6 * abs(float(ra["rec"]))
        for m, v in a["methods"].items():
            if m.startswith("kmeans"):
                assert b["methods"][m] == v


def test_stack_groups_balance_programs_by_store_size() -> None:
    """--batched splits the runs into --jobs stacked programs by store size: a program steps through
    its largest store, and each run in it adds to every step's cost."""
    from mixbench.sweep import STACK_RUN_COST, stack_groups

    sizes = [3911, 3477, 3042, 2607, 2173] * 6  # Wikipedia drop stores, r = 0.2 ... 1, any order
    groups = stack_groups(sizes, 2)
    assert sorted(i for g in groups for i in g) == list(range(30)) and all(g == sorted(g) for g in groups)

    def cost(g: list[int]) -> float:
        return max(sizes[i] for i in g) * (1 + STACK_RUN_COST * len(g))

    assert [len(g) for g in groups] == [12, 18]  # the large stores in the smaller program
    interleaved = [list(range(0, 30, 2)), list(range(1, 30, 2))]
    assert max(map(cost, groups)) < 0.9 * max(map(cost, interleaved))
    assert stack_groups([100] * 30, 2) == [list(range(15)), list(range(15, 30))]  # equal stores: equal halves
    assert stack_groups([5, 9, 7], 8) == [[1], [2], [0]] and stack_groups([5, 9], 1) == [[0, 1]]
    assert stack_groups([], 2) == []
