"""The named DM2C variant beside the faithful trainer: dm2c-anchor (train.variants)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mixbench.errors import ConfigError
from test_dm2c import SHORT
from train import DM2C, TrainConfig, get_variant, list_variants
from train.data import BenchmarkData
from train.variants import AnchorTrainer, silhouettes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_registered_and_faithful_is_default() -> None:
    assert {"faithful", "dm2c-anchor"} <= set(list_variants())
    assert TrainConfig().variant == "faithful"
    assert get_variant("dm2c-anchor").trainer is AnchorTrainer
    with pytest.raises(ConfigError, match=r"variant_options \(dm2c-anchor\): unknown key 'anker'"):
        TrainConfig.from_dict({"variant": "dm2c-anchor", "variant_options": {"anker": "text"}})
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"variant": "faithful", "variant_options": {"anchor": "text"}})


def test_anchor_is_the_more_clusterable_modality(wiki_bench: Path) -> None:
    """Label-free choice: on Wikipedia the text rows (LDA topics) cluster far better than the images."""
    data = BenchmarkData.from_store(wiki_bench, "cpu")
    sil = silhouettes(data.splits["train"], 10, torch.device("cpu"))
    assert sil["text"] > sil["image"]


def test_anchor_variant_fits_in_the_anchor_input_space(wiki_bench: Path) -> None:
    model = DM2C(variant="dm2c-anchor", seed=0, **SHORT).fit(wiki_bench)
    assert model.trainer_.modalities[model.trainer_.anchor] == "text"
    data = BenchmarkData.from_store(wiki_bench, "cpu")
    test = data.splits["test"]
    emb = model.transform("test")
    emb = emb.cpu().numpy() if hasattr(emb, "cpu") else np.asarray(emb)
    # anchor (text) rows are their own input features; image rows are translated into that space
    n_img = test.n("image")
    np.testing.assert_allclose(emb[n_img:], test.x["text"].numpy(), rtol=0, atol=0)
    assert emb.shape == (test.n(), data.dims["text"])
    # the k-means was fitted on the text training rows: its centres live in the text input space
    centres = model.kmeans_.cluster_centers_
    centres = centres.cpu().numpy() if hasattr(centres, "cpu") else np.asarray(centres)
    assert centres.shape == (10, data.dims["text"])
    scores = model.score("test")
    assert 0.0 <= scores["acc"] <= 1.0 and np.isfinite(scores["nmi"])


def test_same_training_as_faithful(wiki_bench: Path) -> None:
    """The variant changes the evaluation only: trained weights equal faithful's for one seed."""
    a = DM2C(variant="faithful", seed=3, **SHORT).fit(wiki_bench)
    b = DM2C(variant="dm2c-anchor", seed=3, variant_options={"anchor": "text"}, **SHORT).fit(wiki_bench)
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    with pytest.raises(ConfigError, match="not a modality"):
        DM2C(variant="dm2c-anchor", variant_options={"anchor": "audio"}, **SHORT).fit(wiki_bench)


def test_anchor_and_skipped_batches_are_named_in_the_run(wiki_bench: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The anchor is reported by its modality's name (not '1.0000'); skipped batches are logged and in
    report.md, not only in metrics.json."""
    import json
    import logging

    import train

    with caplog.at_level(logging.INFO):
        train.train(wiki_bench, tmp_path / "run", {"variant": "dm2c-anchor", "seed": 0, "batch_size": 724,
                                              "plots": False, **SHORT})
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["anchor"] == "text"
    assert "anchor" not in metrics["diagnostics"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "anchor modality: text (chosen without labels" in report
    assert f"skipped batches (a modality with fewer than 2 rows; BatchNorm cannot train on them): " \
           f"{metrics['skipped_batches']}" in report
    assert "anchor modality 'text'" in caplog.text
    assert metrics["skipped_batches"] > 0  # batch 724 of 2,173 rows leaves a too-small remainder
    assert f"skipped {metrics['skipped_batches']} batch(es)" in caplog.text


def big_cluster_plus_outliers(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``x`` made "one big cluster plus outliers": 45 rows replaced by 9 tight groups of 5 (a few far
    near-duplicates), each 10 median row distances from the mean in a random direction; the other rows
    untouched."""
    rng = np.random.default_rng(seed)
    x = x.clone()
    mu = x.mean(0)
    radius = torch.linalg.vector_norm(x - mu, dim=1).median()
    idx = rng.choice(len(x), size=45, replace=False)
    for g in range(9):
        rows = torch.as_tensor(idx[g * 5:(g + 1) * 5])
        direction = torch.as_tensor(rng.normal(size=x.shape[1]), dtype=x.dtype)
        direction /= torch.linalg.vector_norm(direction)
        x[rows] = mu + 10 * radius * direction + 0.05 * (x[rows] - mu)
    return x


def test_anchor_criterion_does_not_prefer_one_big_cluster_plus_outliers(wiki_bench: Path, uci_dir: Path,
                                                                        tmp_path: Path) -> None:
    """The plain silhouette prefers a view that is one big cluster plus far outliers (k-means gives the
    outliers their own clusters); the anchor criterion sets far-out rows aside first. Label-free."""
    from dataclasses import replace

    from sklearn.metrics import silhouette_score

    from train.kmeans import KMeans

    train = BenchmarkData.from_store(wiki_bench, "cpu").splits["train"]
    bad = replace(train, x={**train.x, "image": big_cluster_plus_outliers(train.x["image"])})

    def plain(x: torch.Tensor) -> float:
        labels = np.asarray(KMeans(10, n_init=10, seed=0, device="cpu").fit(x).labels_)
        return float(silhouette_score(x.numpy(), labels))

    assert plain(bad.x["image"]) > plain(bad.x["text"])  # the plain criterion is fooled
    sil = silhouettes(bad, 10, torch.device("cpu"))
    assert sil["text"] > sil["image"]
    # the shipped UCI store (fou + kar): kar, as the plain silhouette chose
    import mixbench.run as run

    run.run_recipe(Path(__file__).resolve().parent.parent / "data" / "recipes" / "uci-mfeat.toml",
                   out=tmp_path / "uci", until="unpair", overrides={"prep": {"root": str(uci_dir)}})
    uci = BenchmarkData.from_store(tmp_path / "uci" / "unpair", "cpu").splits["train"]
    sil = silhouettes(uci, 10, torch.device("cpu"))
    assert sil["kar"] > sil["fou"]
