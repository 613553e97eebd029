"""MvCLN and SURE (train.mvcln): the loss against a numpy re-derivation, the pair construction and
the re-alignment against plain loops, and both methods through the train stage on UCI mfeat fou + kar
made by the real stages (decouple and drop), with the re-pairing scores and the bad inputs.

Small towers and few epochs keep this fast; the reference-equality check (same weights and batches →
same losses as XLearning-SCU/2021-CVPR-MvCLN) runs when ``MVCLN_REF`` names a checkout of it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixbench.errors import ConfigError, DataError, StoreError
from train import train
from train.data import BenchmarkData, SplitTensors
from train.mvcln import (
    MvCLNOptions,
    PartialAlignment,
    BitsDropout,
    LinkedCCA,
    TwoTowers,
    greedy_match,
    noise_robust_loss,
    resolved,
    training_pairs,
)
from train.repairing import hidden_partners

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
SMALL = {"hiddens": [64, 64], "epochs": 4, "neg_prop": 5, "batch_size": 128, "n_init": 3}


def _numpy_loss(d: np.ndarray, p: np.ndarray, m: float, fine: bool) -> float:
    """The loss written out term by term (MvCLN paper eq. 3 and the reference's switch)."""
    total = 0.0
    for di, pi in zip(d, p):
        if pi == 1:
            total += di ** 2
        elif fine:
            total += (1 / m) * max(0.0, np.sqrt(di) * (m - di)) ** 2
        else:
            total += max(0.0, m - di) ** 2
    return total / (2 * len(d))


@pytest.mark.parametrize("fine", [False, True])
def test_loss_matches_the_numpy_rederivation(fine: bool) -> None:
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 7, size=64)
    p = (rng.uniform(size=64) < 0.2).astype(np.int64)
    ours = noise_robust_loss(torch.as_tensor(d), torch.as_tensor(p), 4.0, fine).item()
    assert ours == pytest.approx(_numpy_loss(d, p, 4.0, fine), rel=1e-12)


def test_training_pairs_are_positives_then_negatives_per_anchor() -> None:
    i, j, pos = training_pairs(50, 7, np.random.default_rng(1))
    assert len(i) == 50 * 8 and pos[:50].all() and not pos[50:].any()
    assert (i[:50] == np.arange(50)).all() and (j[:50] == np.arange(50)).all()
    neg = j[50:].reshape(50, 7)
    assert (i[50:].reshape(50, 7) == np.arange(50)[:, None]).all()
    assert all(len(set(r)) == 7 for r in neg)  # without replacement per anchor
    assert training_pairs(3, 30, np.random.default_rng(0))[0].shape == (3 + 9,)  # at most n negatives


def test_greedy_match_is_the_reference_loop() -> None:
    rng = np.random.default_rng(2)
    d = rng.uniform(size=(40, 40))
    c = d.copy()
    want = []
    for i in range(40):  # alignment.tiny_infer: argsort the row, take the first, block its column
        j = int(np.argsort(c[i])[0])
        want.append(j)
        c[:, j] = np.inf
    assert greedy_match(torch.as_tensor(d)).tolist() == want
    assert sorted(want) == list(range(40))


def test_options_presets_and_explicit_keys() -> None:
    plus = resolved(MvCLNOptions(variant="mvcln-plus"), {"variant": "mvcln-plus"})
    assert plus.unlinked == "impute" and plus.k_fill == 10 and plus.cluster_on == "input"
    kept = resolved(MvCLNOptions(variant="mvcln-plus", k_fill=5), {"variant": "mvcln-plus", "k_fill": 5})
    assert kept.k_fill == 5 and kept.unlinked == "impute"
    with pytest.raises(ConfigError, match="realign_scope"):
        MvCLNOptions.from_dict({"realign_scope": "some"})


def _uci(root: Path, uci_dir: Path, **unpair: object) -> Path:
    from mixbench.run import run_recipe

    run_recipe(REPO / "data" / "recipes" / "uci-mfeat.toml", out=root, until="unpair",
               overrides={"prep": {"root": str(uci_dir)}, "unpair": dict(unpair)})
    return root / "unpair"


@pytest.fixture(scope="module")
def uci_decouple(tmp_path_factory: pytest.TempPathFactory, uci_dir: Path) -> Path:
    """UCI fou + kar, half of the train pairs and all test pairs decoupled (both halves kept, unlinked)."""
    return _uci(tmp_path_factory.mktemp("mvcln-uci"), uci_dir, ratio=0.5, mode="decouple")


@pytest.fixture(scope="module")
def uci_drop(tmp_path_factory: pytest.TempPathFactory, uci_dir: Path) -> Path:
    return _uci(tmp_path_factory.mktemp("mvcln-uci-drop"), uci_dir, ratio=0.5, mode="drop", test_ratio=0.5)


def _cfg(method: str, **opts: object) -> dict[str, object]:
    return {"method": method, "device": "cpu", "n_init": 3, "plots": False, "method_options": {**SMALL, **opts}}


def test_mvcln_through_the_stage_with_repairing_scores(uci_decouple: Path, tmp_path: Path) -> None:
    result = train(uci_decouple, tmp_path / "run", _cfg("mvcln"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["method"] == "mvcln" and {"mvcln", "kmeans-linked"} <= set(m["methods"])
    assert m["linked_train_pairs"] == 800 and m["training_pairs"] == 800 * 6
    rep = m["repairing"]
    # train: every row re-paired (the reference re-pairs linked pairs too); 800 decoupled rows, all test rows
    assert rep["train"]["repaired"] == 1600 and rep["train"]["with_hidden_partner"] == 800
    assert m["pair_metrics"]["test"]["acc"] > 0 and m["methods"]["mvcln"]["test"]["acc"] > 0
    assert rep["test"]["repaired"] == rep["test"]["with_hidden_partner"] == 400
    for split in ("train", "test"):
        r = rep[split]
        assert 0 <= r["partner_found"] <= r["car"] <= 1
        assert 1 <= r["partner_rank"] <= 2 * r["partner_rank_chance"]
        # fou and kar describe the same digits: after ~150 steps the towers re-pair above chance (1 / 10 classes)
        assert r["car"] > 0.15
    assert "## Re-pairing (mvcln)" in (tmp_path / "run" / "report.md").read_text()
    assert "| mvcln |" in result["table"]
    emb = np.load(tmp_path / "run" / "embeddings.npz")
    assert emb["test_cluster"].shape == (800,) and (emb["test_cluster"] >= 0).all()
    rows = [json.loads(x) for x in (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["phase"] == "mvcln"] == list(range(5))
    assert rows[0]["margin"] == 5.0 and rows[1]["margin"] == max(1, round(rows[0]["pos_dist"] + rows[0]["neg_dist"]))


def test_realign_only_the_unlinked_rows_in_one_chunk(uci_decouple: Path, tmp_path: Path) -> None:
    train(uci_decouple, tmp_path / "run", _cfg("mvcln", realign_scope="unlinked", realign_batch=0, matching="hungarian",
                                                 cluster_on="both"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["repairing"]["train"]["repaired"] == 800  # the 800 linked pairs stay as they are
    assert m["repairing"]["train"]["partner_rank_chance"] == pytest.approx(400.5)  # one chunk: the whole split


def test_plus_variant_imputes_from_ten_neighbours(uci_decouple: Path, tmp_path: Path) -> None:
    train(uci_decouple, tmp_path / "run", _cfg("mvcln", variant="mvcln-plus"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "mvcln-plus" in m["methods"] and m["unlinked"] == "impute"
    assert m["method_options"]["k_fill"] == 10 and m["repairing"]["test"]["imputed_rows"] == 800


@pytest.mark.parametrize("speed", [{}, {"precision": "bf16", "dropout_masks": "bits"}], ids=["fp32", "fast"])
def test_resume_gives_the_uninterrupted_run(uci_decouple: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            speed: dict[str, str]) -> None:
    cfg = _cfg("mvcln", checkpoint_every=1, **speed)
    full = train(uci_decouple, tmp_path / "full", cfg)["metrics"]
    calls = {"n": 0}
    original = PartialAlignment.run_epoch

    def interrupted(self: PartialAlignment) -> dict[str, object]:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(PartialAlignment, "run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(uci_decouple, tmp_path / "cut", cfg)
    monkeypatch.setattr(PartialAlignment, "run_epoch", original)
    if not speed:  # a checkpoint changed by one byte is refused, naming the file and the fix
        shutil.copytree(tmp_path / "cut", tmp_path / "damaged")
        (ckpt,) = (tmp_path / "damaged").rglob("last.pt")
        raw = bytearray(ckpt.read_bytes())
        raw[-100] ^= 1
        ckpt.write_bytes(bytes(raw))
        with pytest.raises(StoreError, match="sha256.*delete it"):
            train(uci_decouple, tmp_path / "damaged", cfg)
    again = train(uci_decouple, tmp_path / "cut", cfg)["metrics"]
    assert again["resumed"] and again["methods"]["mvcln"] == full["methods"]["mvcln"]
    assert again["repairing"] == full["repairing"]
    if speed:
        return
    with pytest.raises(ConfigError, match="lr"):  # an interrupted run of another config is refused
        (tmp_path / "cut" / "run.json").unlink()
        train(uci_decouple, tmp_path / "cut", _cfg("mvcln", checkpoint_every=1, lr=5e-4))


def test_bits_dropout_keeps_the_share_and_scales_like_nn_dropout() -> None:
    drop = BitsDropout(0.2)
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.8) < 2e-3  # 1e6 draws: std 4e-4
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.8))
    assert abs(y.mean().item() - 1.0) < 3e-3  # inverted dropout keeps the mean
    assert not torch.equal(drop(x), drop(x))  # fresh masks per call
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # drawn from the global generator (checkpointed for resume)
    drop.eval()
    assert drop(x) is x
    assert BitsDropout(0.0)(x) is x
    odd = torch.ones(3, 7)  # sizes that are not a multiple of 4
    assert BitsDropout(0.5)(odd).shape == (3, 7)


def _memory_data(xa: np.ndarray, xb: np.ndarray, y: np.ndarray, linked: int) -> BenchmarkData:
    """One train split: row i of each modality is one instance; the first ``linked`` rows stay linked."""
    n = len(y)
    pair = torch.tensor([i if i < linked else -1 for i in range(n)])
    ids = np.array([f"r{i}" for i in range(n)])
    split = SplitTensors({"a": torch.as_tensor(xa), "b": torch.as_tensor(xb)},
                         {"a": torch.as_tensor(y), "b": torch.as_tensor(y)}, {"a": pair, "b": pair.clone()},
                         {"a": ids, "b": ids})
    return BenchmarkData(["a", "b"], [str(c) for c in range(int(y.max()) + 1)], {"train": split},
                         {"a": xa.shape[1], "b": xb.shape[1]}, {})


def test_fast_options_track_the_fp32_losses() -> None:
    """bf16 products (same weights, batches and dropout draws) stay within 1 % of the fp32 losses
    over a few steps; the bits masks change only the draws."""
    rng = np.random.default_rng(0)
    n, k = 600, 4
    y = np.repeat(np.arange(k), n // k)
    xa = (rng.normal(size=(n, 12)) + y[:, None]).astype(np.float32)
    xb = (rng.normal(size=(n, 9)) - y[:, None]).astype(np.float32)
    data = _memory_data(xa, xb, y, linked=400)
    losses = {}
    for prec in ("fp32", "bf16"):
        tr = PartialAlignment(data, MvCLNOptions(epochs=3, precision=prec, hiddens=[256, 256], batch_size=256,
                                                 neg_prop=5), seed=0, device=torch.device("cpu"), sure=False)
        losses[prec] = [tr.run_epoch()["loss"] for _ in range(4)]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=1e-2)
    assert losses["bf16"] != losses["fp32"]


def test_linked_cca_finds_held_out_partners() -> None:
    """Two noisy views of a shared 3-d latent: the CCA fitted on 200 links puts the 100 other rows next
    to their own partners far more often than the raw (standardized) inputs do, weakly shared directions
    count less (scaled by their correlation), and the width is capped by the dims and the links."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 3, generator=g)
    xa = z @ torch.randn(3, 8, generator=g) + 0.3 * torch.randn(300, 8, generator=g)
    xb = z @ torch.randn(3, 6, generator=g) + 0.3 * torch.randn(300, 6, generator=g) + 5.0
    cca = LinkedCCA(xa[:200], xb[:200], dim=3)
    assert cca.dim == 3 and bool((cca.rho[:-1] >= cca.rho[1:]).all()) and float(cca.rho[0]) <= 1.0
    pa, pb = cca.transform(xa[200:], xb[200:])
    assert pa.shape == (100, 3) and pa.dtype == torch.float32
    found = (torch.cdist(pa, pb).argmin(1) == torch.arange(100)).float().mean().item()
    assert found > 0.5
    assert LinkedCCA(xa[:4], xb[:4], dim=10).dim == 3  # at most links - 1
    assert LinkedCCA(xa, xb, dim=10).dim == 6  # at most the smaller dim
    empty = cca.transform(xa[:0], xb[:0])
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)


def test_cca_variants_through_the_stage(uci_decouple: Path, tmp_path: Path) -> None:
    train(uci_decouple, tmp_path / "lin", _cfg("mvcln", variant="linked-cca"))
    m = json.loads((tmp_path / "lin" / "metrics.json").read_text())
    assert "linked-cca" in m["methods"] and m["method_options"]["neighbours"] == "cca"
    assert m["method_options"]["epochs"] == 4  # the explicit SMALL epochs override the preset's 0
    train(uci_decouple, tmp_path / "lin0", {**_cfg("mvcln", variant="linked-cca"),
                                              "method_options": {"variant": "linked-cca", "n_init": 3}})
    m0 = json.loads((tmp_path / "lin0" / "metrics.json").read_text())
    assert m0["method_options"]["epochs"] == 0 and m0["final_epoch"] == 0  # only the margin pass
    assert m0["repairing"]["test"]["imputed_rows"] == 800
    # the towers are not used: the trained run (4 epochs) clusters exactly like the untrained one
    assert m0["methods"]["linked-cca"] == m["methods"]["linked-cca"]
    train(uci_decouple, tmp_path / "both", _cfg("mvcln", variant="mvcln-plus-cca"))
    mb = json.loads((tmp_path / "both" / "metrics.json").read_text())
    assert mb["method_options"]["neighbours"] == "both" and mb["repairing"]["test"]["imputed_rows"] == 800
    emb = np.load(tmp_path / "both" / "embeddings.npz")  # [h_a | cca_a, h_b | cca_b]: 10 + 10 per half
    assert emb["test_pair_embedding"].shape[1] == 2 * (10 + 10)


def test_sure_imputes_on_a_drop_store(uci_drop: Path, tmp_path: Path) -> None:
    train(uci_drop, tmp_path / "run", _cfg("sure"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["unlinked"] == "impute" and "sure" in m["methods"]
    # one half kept per broken pair: 800 of the 1600 train pairs, 200 of the 400 test pairs
    assert m["repairing"]["train"]["imputed_rows"] == 800 and m["repairing"]["test"]["imputed_rows"] == 200
    rows = [json.loads(x) for x in (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()]
    assert all("ver_loss" in r for r in rows)


def test_sure_repairs_on_a_decouple_store(uci_decouple: Path, tmp_path: Path) -> None:
    train(uci_decouple, tmp_path / "run", _cfg("sure", epochs=1))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["unlinked"] == "realign" and m["repairing"]["test"]["with_hidden_partner"] == 400


def test_bad_input(uci_drop: Path, uci_decouple: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DataError, match="decouple"):  # halves dropped: mvcln cannot re-pair one-to-one
        train(uci_drop, tmp_path / "a", _cfg("mvcln"))
    # hidden partners missing: a drop store has none, a store without its selection file neither
    assert hidden_partners(BenchmarkData.from_store(uci_drop)) is None
    copy = tmp_path / "nosel"
    shutil.copytree(uci_decouple, copy)
    (copy / "selection.h5").unlink()
    data = BenchmarkData.from_store(copy)
    assert hidden_partners(data) is None
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train.repairing"):  # the run goes on, CAR without partners
        train(copy, tmp_path / "run", _cfg("mvcln", epochs=1))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "car" in m["repairing"]["test"] and "partner_found" not in m["repairing"]["test"]
    assert sum("partner recovery skipped" in r.getMessage() for r in caplog.records) == 1


def _tiny(n_train: int, n_test_b: int, linked: int) -> BenchmarkData:
    def split(n_a: int, n_b: int, k: int) -> SplitTensors:
        g = torch.Generator().manual_seed(n_a)
        pair_a = torch.tensor([i if i < k else -1 for i in range(n_a)])
        pair_b = torch.tensor([i if i < k else -1 for i in range(n_b)])
        return SplitTensors({"a": torch.randn(n_a, 4, generator=g), "b": torch.randn(n_b, 3, generator=g)},
                            {"a": torch.arange(n_a) % 3, "b": torch.arange(n_b) % 3},
                            {"a": pair_a, "b": pair_b},
                            {"a": np.array([f"a{i}" for i in range(n_a)]), "b": np.array([f"b{i}" for i in range(n_b)])})
    return BenchmarkData(["a", "b"], ["x", "y", "z"], {"train": split(n_train, n_train, linked), "test": split(4, n_test_b, 0)},
                         {"a": 4, "b": 3}, {})


def test_bad_input_in_memory() -> None:
    from train.config import TrainConfig
    from train.mvcln import check_partial
    from train.registry import RunContext

    cfg = TrainConfig.from_dict({"method": "mvcln", "device": "cpu"})
    ctx = RunContext(cfg=cfg, options=MvCLNOptions(), device=torch.device("cpu"), out=None, runlog=None,
                     checkpoint_dir=None, input_sha256="")
    with pytest.raises(DataError, match="0 linked pair"):
        check_partial(_tiny(10, 4, 0), ctx, sure=False)
    with pytest.raises(DataError, match="no rows of modality 'b'"):
        check_partial(_tiny(10, 0, 5), ctx, sure=False)
    with pytest.raises(DataError, match="k-means needs"):
        check_partial(_tiny(2, 4, 2), ctx, sure=False)
    check_partial(_tiny(10, 4, 5), ctx, sure=False)  # a usable one passes


@pytest.mark.skipif(not os.environ.get("MVCLN_REF"), reason="MVCLN_REF (a checkout of XLearning-SCU/2021-CVPR-MvCLN) not set")
def test_same_weights_and_batches_give_the_reference_losses() -> None:
    """Reference towers and loss (loaded from MVCLN_REF) vs ours: same weights, same batches, same
    dropout draws → the same losses over a few Adam steps, both loss branches."""
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    from mvcln import load_reference  # bench/mvcln.py

    ref = load_reference(Path(os.environ["MVCLN_REF"]))
    torch.manual_seed(0)
    theirs = ref.models.MvCLNfcScene()
    ours = TwoTowers(20, 59, [1024, 1024, 1024], 10, 0.2, decoders=False)
    ours.load_state_dict(theirs.state_dict())
    crit = ref.run.NoiseRobustLoss()
    opt_t = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    opt_o = torch.optim.Adam(ours.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for step, fine in enumerate([False, False, True, True]):
        x0, x1 = torch.randn(256, 20, generator=g), torch.randn(256, 59, generator=g)
        lab = (torch.rand(256, generator=g) < 1 / 31).long()
        args = type("A", (), {"start_fine": fine})()
        losses = []
        for model, opt in ((theirs, opt_t), (ours, opt_o)):
            model.train()
            torch.manual_seed(100 + step)  # the same dropout masks
            h0, h1 = model(x0, x1)
            loss = crit(F.pairwise_distance(h0, h1), lab, 5, 1, args) if model is theirs else \
                noise_robust_loss(F.pairwise_distance(h0, h1), lab, 5, fine)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-6, abs=1e-7)


def test_impute_instead_of_repair_on_a_decouple_store(uci_decouple: Path, tmp_path: Path) -> None:
    train(uci_decouple, tmp_path / "run", _cfg("mvcln", epochs=1, unlinked="impute", k_fill=5, realign_batch=0,
                                                 cluster_on="both"))
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    rep = m["repairing"]["test"]
    assert m["unlinked"] == "impute" and rep["imputed_rows"] == 800 and rep["with_hidden_partner"] == 800
    assert 0 <= rep["partner_in_k"] <= 1 and 0 < rep["car"] < 1


# -- the scikit-learn-style estimators (train.estimator.MvCLN / SURE) ------------------------------


def test_estimator_is_the_stage_bit_for_bit(uci_decouple: Path, tmp_path: Path) -> None:
    from train.estimator import MvCLN

    opts = {**SMALL, "epochs": 2}
    est = MvCLN(**opts, device="cpu", random_state=0)
    assert est.fit(uci_decouple) is est
    m = train(uci_decouple, tmp_path / "run", {"method": "mvcln", "device": "cpu", "plots": False, "method_options": opts})
    assert est.metrics_ == m["metrics"]["methods"]["mvcln"]
    assert est.repairing_ == m["metrics"]["repairing"]
    assert np.array_equal(est.labels_, np.load(tmp_path / "run" / "embeddings.npz")["train_cluster"])
    assert np.array_equal(est.predict("train"), est.labels_)
    assert est.score("test") == est.metrics_["test"] and est.n_clusters_ == 10
    emb = est.transform("test")
    assert emb.shape == (800, 20) and np.isfinite(emb).all()  # each row: its pair's [h_a, h_b]
    # the pair's two rows share their features (re-paired one-to-one: every test row is in one pair)
    slots = est.evaluation_["slots"]["test"]
    assert np.array_equal(emb[slots.a[0]], emb[400 + slots.b[0]])


def test_estimator_predicts_new_rows_and_is_reproducible(uci_decouple: Path) -> None:
    from train.estimator import MvCLN

    a = MvCLN(**{**SMALL, "epochs": 1}, variant="mvcln-plus", device="cpu", seed=3)
    labels = a.fit_predict(uci_decouple)
    b = MvCLN(**{**SMALL, "epochs": 1}, variant="mvcln-plus", device="cpu", random_state=3).fit(uci_decouple)
    assert np.array_equal(labels, b.labels_) and a.metrics_ == b.metrics_
    assert a.resolved_options.cluster_on == "input" and a.get_params()["variant"] == "mvcln-plus"
    clone = MvCLN(**a.get_params())  # scikit-learn's clone: the same effective settings
    assert clone.resolved_options == a.resolved_options and clone.get_params() == a.get_params()
    assert a.get_params()["k_fill"] == 10 and MvCLN(variant="mvcln-plus").set_params(variant="faithful").get_params()["k_fill"] == 3
    test = a.data_.splits["test"]  # every test row unlinked: imputed from the whole split, so order-free
    mods = a.data_.modalities
    assert np.array_equal(a.predict(test), a.predict("test"))
    assert np.array_equal(a.predict((test.x[mods[0]].numpy(), test.x[mods[1]].numpy())), a.predict("test"))
    assert a.score(test) == a.metrics_["test"]


def test_estimator_params_and_errors(uci_drop: Path) -> None:
    from train.estimator import SURE, MvCLN, NotFittedError

    m = MvCLN(epochs=3, seed=1)
    assert m.get_params()["epochs"] == 3 and MvCLN(**m.get_params()).get_params() == m.get_params()
    assert m.set_params(lr=5e-4).get_params()["lr"] == 5e-4 and m.get_params()["epochs"] == 3
    assert repr(m) == "MvCLN(epochs=3, lr=0.0005, seed=1)"
    with pytest.raises(NotFittedError, match="fit"):
        m.predict("test")
    with pytest.raises(ConfigError, match="epoch"):
        MvCLN(epoch=3)
    with pytest.raises(ConfigError, match="disagree"):
        MvCLN(seed=1, random_state=2)
    with pytest.raises(DataError, match="decouple"):  # halves dropped: mvcln cannot re-pair, SURE imputes
        MvCLN(**SMALL, device="cpu").fit(uci_drop)
    s = SURE(**{**SMALL, "epochs": 1}, device="cpu").fit(uci_drop)
    assert s.repairing_["test"]["imputed_rows"] == 200 and s.predict("test").shape == (600,)
    with pytest.raises(DataError, match="feature dims"):
        s.predict((np.zeros((3, 5)), np.zeros((3, 5))))
