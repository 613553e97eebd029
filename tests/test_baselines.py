"""train.baselines on a small real benchmark built from the Wikipedia paired store.

The mixed-modal split is the one the reference measurements used: per split, a fresh
``default_rng(0).permutation(n)``; the first ⌈n/2⌉ pairs keep only their image (PCA to 10 dims,
fitted on the train image instances), the rest only their text (10-d LDA proportions, raw). On
exactly this input scikit-learn's k-means gave (mean ± std over 10 seeds, test split):
pooled ACC 0.3384 ± 0.0008, NMI 0.2955, cluster–modality NMI 0.537, ACC image rows 0.170 / text
rows 0.588; centred ACC 0.3450 ± 0.0025, NMI 0.3008, cluster–modality NMI 0.333."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mixbench.errors import DataError
from mixbench.store.shards import Store
from train.baselines import kmeans_baselines
from train.data import BenchmarkData, SplitTensors
from train.metrics import METRICS


def _tensors(xs: dict[str, np.ndarray], ys: dict[str, np.ndarray], ps: dict[str, np.ndarray]) -> SplitTensors:
    return SplitTensors(
        x={m: torch.as_tensor(v, dtype=torch.float32) for m, v in xs.items()},
        y={m: torch.as_tensor(v, dtype=torch.long) for m, v in ys.items()},
        pair={m: torch.as_tensor(v, dtype=torch.long) for m, v in ps.items()},
        ids={m: np.asarray([f"{m}{i}" for i in range(len(v))], dtype=object) for m, v in ys.items()},
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paired(wiki_paired: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    store = Store(wiki_paired)
    return {
        split: {m: store.load(split, m, ["label", "pair", "feat"]) for m in store.modalities} for split in store.splits
    }


@pytest.fixture(scope="module")
def benchmark(paired: dict) -> BenchmarkData:
    """The reference's mixed-modal Wikipedia (image PCA-10, text raw), every pair broken."""
    keep_image = {}
    for split, t in paired.items():
        n = len(t["image"]["label"])
        perm = np.random.default_rng(0).permutation(n)
        mask = np.zeros(n, dtype=bool)
        mask[perm[: math.ceil(n / 2)]] = True
        keep_image[split] = mask
    img_train = paired["train"]["image"]["feat"][keep_image["train"]].astype(np.float64)
    mean = img_train.mean(0)
    _, _, vt = np.linalg.svd(img_train - mean, full_matrices=False)
    # scikit-learn's sign convention (the largest |entry| of each component positive): the sign of
    # image axes matters here, since image and text rows share the pooled coordinates
    vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
    splits = {}
    for split, t in paired.items():
        img, txt = keep_image[split], ~keep_image[split]
        xi = (t["image"]["feat"][img] - mean) @ vt[:10].T
        xs = {"image": xi, "text": t["text"]["feat"][txt]}
        ys = {"image": t["image"]["label"][img], "text": t["text"]["label"][txt]}
        ps = {"image": np.full(img.sum(), -1), "text": np.full(txt.sum(), -1)}
        splits[split] = _tensors(xs, ys, ps)
    return BenchmarkData(["image", "text"], [str(i) for i in range(10)], splits, {"image": 10, "text": 10}, {})


def test_pooled_and_centred_reproduce_the_reference(benchmark: BenchmarkData) -> None:
    res = kmeans_baselines(benchmark, seed=0)
    assert set(res) == {"kmeans-pooled", "kmeans-centred"}  # no linked pairs: no concat
    for method in res:
        assert set(res[method]) == {"train", "test"}
        for split, m in res[method].items():
            assert set(METRICS) <= set(m)
            assert m["n_rows"] == {"train": 2173, "test": 693}[split]
    pooled, centred = res["kmeans-pooled"]["test"], res["kmeans-centred"]["test"]
    assert pooled["acc"] == pytest.approx(0.3384, abs=0.01)
    assert pooled["nmi"] == pytest.approx(0.2955, abs=0.01)
    assert pooled["modality_nmi"] == pytest.approx(0.537, abs=0.02)
    assert pooled["acc_image"] == pytest.approx(0.170, abs=0.015)
    assert pooled["acc_text"] == pytest.approx(0.588, abs=0.02)
    assert centred["acc"] == pytest.approx(0.3450, abs=0.01)
    assert centred["nmi"] == pytest.approx(0.3008, abs=0.01)
    assert centred["modality_nmi"] == pytest.approx(0.333, abs=0.02)
    # train metrics come from the fit itself (labels_), at the reference's level too
    assert res["kmeans-pooled"]["train"]["acc"] == pytest.approx(0.3474, abs=0.01)
    # one seed, one result
    again = kmeans_baselines(benchmark, seed=0, device="cpu")
    assert again == res


def _linked_first(paired: dict, n_linked: int) -> BenchmarkData:
    """Both halves of every pair kept (raw features: image 128-d, text 10-d); in train only the first
    ``n_linked`` pairs stay linked, in test all of them."""
    splits = {}
    for split, t in paired.items():
        pair = t["image"]["pair"].copy()
        if split == "train":
            pair[n_linked:] = -1
        xs = {m: t[m]["feat"] for m in ("image", "text")}
        ys = {m: t[m]["label"] for m in ("image", "text")}
        splits[split] = _tensors(xs, ys, {"image": pair, "text": t["text"]["pair"]})
    return BenchmarkData(["image", "text"], [str(i) for i in range(10)], splits, {"image": 128, "text": 10}, {})


def test_concat_runs_on_linked_pairs_only(paired: dict) -> None:
    """Both halves kept; train links kept for the first 800 pairs only, test links all kept."""
    data = _linked_first(paired, 800)
    res = kmeans_baselines(data, seed=0, n_init=5)
    assert list(res) == ["kmeans-concat", "kmeans-linked"]  # different dims: no pooled methods
    concat = res["kmeans-concat"]
    assert concat["train"]["n_rows"] == 800 and concat["test"]["n_rows"] == 693
    assert "modality_nmi" not in concat["test"]
    assert concat["test"]["acc"] > 0.45  # the text half carries the classes (reference: ~0.55)


def test_store_with_different_dims_skips_pooled(wiki_paired: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = BenchmarkData.from_store(wiki_paired)
    with caplog.at_level(logging.WARNING, logger="train.baselines"):
        res = kmeans_baselines(data, seed=0, n_init=2, max_iter=50)
    assert "different feature dims" in caplog.text
    assert list(res) == ["kmeans-concat", "kmeans-linked"] and res["kmeans-concat"]["train"]["n_rows"] == 2173


def test_bad_benchmarks_give_clear_errors(benchmark: BenchmarkData) -> None:
    no_train = BenchmarkData(benchmark.modalities, benchmark.classes, {"test": benchmark.splits["test"]}, benchmark.dims, {})
    with pytest.raises(DataError, match="no 'train' split"):
        kmeans_baselines(no_train)
    tiny = {
        "train": _tensors(
            {"image": np.zeros((3, 10)), "text": np.ones((2, 10))}, {"image": [0, 1, 2], "text": [3, 4]},
            {"image": [-1] * 3, "text": [-1] * 2},
        )
    }
    with pytest.raises(DataError, match="5 rows for k = 10 clusters"):
        kmeans_baselines(BenchmarkData(benchmark.modalities, benchmark.classes, tiny, benchmark.dims, {}))
    bad_pairs = {
        "train": _tensors(
            {"image": np.random.default_rng(0).normal(size=(12, 4)), "text": np.random.default_rng(1).normal(size=(12, 4))},
            {"image": np.arange(12) % 3, "text": (np.arange(12) + 1) % 3},
            {"image": np.arange(12), "text": np.arange(12)},
        )
    }
    with pytest.raises(DataError, match="linked pair 0 has label 0 in 'image' but 1 in 'text'"):
        kmeans_baselines(BenchmarkData(["image", "text"], ["a", "b", "c"], bad_pairs, {"image": 4, "text": 4}, {}))


def test_linked_aligns_the_modalities_through_the_pairs(paired: dict) -> None:
    """Both halves kept; 800 train pairs still linked: kmeans-linked clusters each modality as
    headroom does and aligns them through the pairs, above a random alignment and within the
    label-matched (oracle) one. (Wikipedia's image clusters are weakly class-aligned: the links
    recover part of the gap, 0.351 against 0.330 random and 0.369 oracle.)"""
    from train.headroom import headroom

    data = _linked_first(paired, 800)
    res = kmeans_baselines(data, seed=0, n_init=5)
    assert list(res) == ["kmeans-concat", "kmeans-linked"]
    linked = res["kmeans-linked"]["test"]
    assert linked["n_rows"] == 2 * 693 and linked["linked_pairs"] == 800
    bounds = headroom(data, seed=0, n_init=5, n_permutations=200, supervised=False)["test"]
    assert linked["acc_image"] == bounds["acc_image"] and linked["acc_text"] == bounds["acc_text"]  # same k-means
    assert bounds["aligned_random"] + 0.01 < linked["acc"] <= bounds["aligned_oracle"]


def test_shared_per_modality_kmeans_gives_the_same_figures_without_refitting(
    paired: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train stage fits the per-modality k-means once and hands it to kmeans-linked and headroom:
    the figures are those of the two separate fits, and no further k-means is fitted for them."""
    from train import baselines
    from train.headroom import headroom

    data = _linked_first(paired, 800)
    alone = kmeans_baselines(data, seed=0, n_init=5)
    bounds_alone = headroom(data, seed=0, n_init=5, n_permutations=50, supervised=False)
    models = baselines.modality_kmeans(data, seed=0, n_init=5)
    assert sorted(models) == ["image", "text"]

    def refit(*args: object, **kwargs: object) -> None:
        raise AssertionError("per-modality k-means fitted again although it was shared")

    monkeypatch.setattr(baselines, "modality_kmeans", refit)
    shared = kmeans_baselines(data, seed=0, n_init=5, modality_models=models)
    assert shared == alone
    assert headroom(data, seed=0, n_init=5, n_permutations=50, supervised=False, models=models) == bounds_alone


def test_linked_on_uci_recovers_most_of_the_alignment(uci_dir: Path, tmp_path: Path) -> None:
    """UCI fou + kar: both views carry the digits, so aligning their clusters is worth a lot. With
    all 1,600 train pairs linked kmeans-linked nearly reaches the oracle alignment (~0.64 against
    ~0.41 random); on a benchmark with ratio 1 it is left out."""
    import prep
    from train.headroom import headroom

    prep.prepare({"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["fou", "kar"]}, tmp_path / "p")
    data = BenchmarkData.from_store(tmp_path / "p")
    res = kmeans_baselines(data, seed=0, n_init=5)
    linked = res["kmeans-linked"]["test"]
    bounds = headroom(data, seed=0, n_init=5, n_permutations=200, supervised=False)["test"]
    assert bounds["aligned_random"] + 0.15 < linked["acc"] <= bounds["aligned_oracle"]
    assert linked["acc"] > bounds["aligned_oracle"] - 0.05
