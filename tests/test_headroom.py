"""train.headroom: per-modality clusterability and the cross-modal alignment bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mixbench.errors import DataError
from train.data import BenchmarkData, SplitTensors
from train.headroom import headroom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _split(rng: np.random.Generator, sizes: dict[str, int], k: int, shift: dict[str, float]) -> SplitTensors:
    """k well-separated classes per modality (``sizes[m]`` rows per class), classes on different axes."""
    xs, ys = {}, {}
    for m, n in sizes.items():
        y = np.repeat(np.arange(k), n)
        x = rng.normal(scale=0.05, size=(len(y), k)) + 5.0 * np.eye(k)[y] + shift[m]
        xs[m], ys[m] = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    return SplitTensors(xs, ys, {m: torch.full_like(v, -1) for m, v in ys.items()},
                        {m: np.array([f"{m}{i}" for i in range(len(v))], dtype=object) for m, v in ys.items()})


def _separable(k: int = 3, n_a: int = 40, n_b: int = 20) -> BenchmarkData:
    rng = np.random.default_rng(0)
    shift = {"a": 0.0, "b": -1.0}
    splits = {s: _split(rng, {"a": n_a, "b": n_b}, k, shift) for s in ("train", "test")}
    return BenchmarkData(["a", "b"], [str(i) for i in range(k)], splits, {"a": k, "b": k}, {})


def test_separable_modalities_have_full_oracle_and_the_expected_random_alignment() -> None:
    k, n_a, n_b = 3, 40, 20
    res = headroom(_separable(k, n_a, n_b), n_init=5, n_permutations=2000)
    for split in ("train", "test"):
        r = res[split]
        assert r["acc_a"] == r["acc_b"] == r["aligned_oracle"] == 1.0
        assert r["n_rows"] == k * (n_a + n_b)
        # a random bijection keeps 1 cluster of b in place on average; a's diagonal (the larger) is matched
        expected = (k * n_a + n_b) / (k * (n_a + n_b))
        assert r["aligned_random"] == pytest.approx(expected, abs=0.02)
        assert r["aligned_random"] < r["aligned_oracle"]
    assert res["test"]["supervised"] == 1.0
    assert "supervised" not in res["train"]  # training accuracy would flatter the features


def test_wikipedia_text_carries_the_signal_and_the_oracle_is_the_row_weighted_mean(wiki_bench: Path) -> None:
    data = BenchmarkData.from_store(wiki_bench)
    res = headroom(data, n_init=5, n_permutations=200)
    again = headroom(data, n_init=5, n_permutations=200)
    assert res == again  # deterministic under a seed
    t = res["test"]
    assert t["acc_text"] > 0.45 and t["acc_image"] < 0.3  # the README's headroom table: text 0.56, images 0.21
    weighted = (t["acc_image"] * t["n_image"] + t["acc_text"] * t["n_text"]) / t["n_rows"]
    assert t["aligned_oracle"] == pytest.approx(weighted)
    assert t["aligned_random"] < t["aligned_oracle"] - 0.02
    assert t["supervised_text"] > t["supervised_image"]


def test_a_modality_with_fewer_train_rows_than_clusters_is_refused() -> None:
    data = _separable(k=3, n_a=40, n_b=20)
    tr = data.splits["train"]
    tr.x["b"], tr.y["b"], tr.pair["b"], tr.ids["b"] = tr.x["b"][:2], tr.y["b"][:2], tr.pair["b"][:2], tr.ids["b"][:2]
    with pytest.raises(DataError, match="modality 'b' has 2 train rows but k-means needs at least k = 3"):
        headroom(data)


def test_inspect_headroom_prints_both_splits(wiki_bench: Path, capsys: pytest.CaptureFixture) -> None:
    from mixbench.cli import main

    assert main(["inspect", str(wiki_bench), "--headroom"]) == 0
    out = capsys.readouterr().out
    assert "headroom" in out
    lines = [ln for ln in out.splitlines() if "aligned_random" in ln]
    assert [ln.split()[0] for ln in lines] == ["train", "test"]
    assert "supervised_text" in lines[1] and "supervised" not in lines[0]
