"""Retrieval methods (retrieval-cca, retrieval-hash, retrieval-twotower) through the train stage on
the real Wikipedia features: figures where they should be, row accounting per unpairing mode, and
bad input refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import embed
import unpair
from mixbench.errors import ConfigError, DataError
from train import list_methods, train
from train.retrieval.data import load_retrieval
from train.retrieval.models import HashModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"hiddens": [64], "epochs": 3}


@pytest.fixture(scope="module")
def wiki_features(tmp_path_factory: pytest.TempPathFactory, wiki_paired: Path) -> Path:
    out = tmp_path_factory.mktemp("wret") / "embed"
    embed.embed(wiki_paired, out, {"dim": 0})  # the original features: image 128-d, text 10-d
    return out


def bench_store(features: Path, out: Path, **cfg: object) -> Path:
    unpair.unpair(features, out, {"ratio": 0.0, "test_ratio": 0.0, "mode": "drop", "strategy": "random", **cfg})
    return out


@pytest.fixture(scope="module")
def r0(wiki_features: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bench_store(wiki_features, tmp_path_factory.mktemp("r0") / "unpair")


def test_methods_are_registered() -> None:
    assert {"retrieval-cca", "retrieval-hash", "retrieval-twotower"} <= set(list_methods())


def test_cca_reproduces_the_anchor(r0: Path, tmp_path: Path) -> None:
    """scikit-learn CCA, 10 components, on the 2,173 training pairs: I→T 0.218–0.228, T→I 0.174–0.179
    measured before this code existed (issue 12), on the 693 test pairs as queries and database."""
    result = train(r0, tmp_path / "run", {"method": "retrieval-cca", "device": "cpu"})
    m = result["metrics"]["methods"]["retrieval-cca"]["test"]
    assert 0.21 <= m["map_i2t"] <= 0.23 and 0.165 <= m["map_t2i"] <= 0.185
    assert m["map_mean"] == pytest.approx((m["map_i2t"] + m["map_t2i"]) / 2)
    ret = result["metrics"]["retrieval"]
    assert ret["rows_used"] == {"linked_pairs": 2173, "unpaired_image": 0, "unpaired_text": 0}
    assert ret["queries"] == {"i2t": 693, "t2i": 693} and ret["database"] == {"i2t": 693, "t2i": 693}
    assert result["table"].startswith("| method | mAP I→T") and "| retrieval-cca |" in result["table"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "test-as-query-and-database" in report and "plots/pr.png" in report
    assert (tmp_path / "run" / "plots" / "pr.png").stat().st_size > 1000
    assert set(result["metrics"]["methods"]) == {"retrieval-cca"}  # no k-means baselines beside it


@pytest.mark.parametrize("method", ["retrieval-hash", "retrieval-twotower"])
def test_deep_methods_run_and_are_deterministic(r0: Path, tmp_path: Path, method: str) -> None:
    cfg = {"method": method, "device": "cpu", "plots": False, "seed": 3, "method_options": FAST}
    a = train(r0, tmp_path / "a", cfg)["metrics"]
    b = train(r0, tmp_path / "b", cfg)["metrics"]
    assert a["methods"] == b["methods"]
    m = a["methods"][method]["test"]
    assert 0.1 < m["map_i2t"] < 0.5 and 0.1 < m["map_t2i"] < 0.5 and 0 <= m["p@10_t2i"] <= 1
    rows = [json.loads(x) for x in (tmp_path / "a" / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert (tmp_path / "a" / "checkpoints" / "last.pt").exists()


def test_hash_codes_are_binary_and_bits_are_checked(r0: Path, tmp_path: Path) -> None:
    data = load_retrieval(r0)
    model = HashModel(16, [32], 2, 128, 1e-3, 1.0, 1.0, 0.0).fit(data, seed=0)
    codes = model.encode(data.query.rows["image"].x, 0)
    assert codes.shape == (693, 16) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ConfigError, match=r"bits.*16, 32, 64"):
        train(r0, tmp_path / "x", {"method": "retrieval-hash", "method_options": {"bits": 24}})


@pytest.mark.parametrize("mode", ["drop", "zero", "decouple"])
def test_rows_used_per_mode(wiki_features: Path, tmp_path: Path, mode: str) -> None:
    """Half the training pairs broken: linked pairs and unpaired rows as each mode leaves them."""
    store = bench_store(wiki_features, tmp_path / "u", ratio=0.5, mode=mode)
    data = load_retrieval(store)
    ia, ib = data.linked()
    assert len(ia) == 2173 - 1087
    assert bool((data.train.rows["image"].y[ia] == data.train.rows["text"].y[ib]).all())
    n_img, n_txt = data.train.n("image"), data.train.n("text")
    if mode == "decouple":  # both halves stay, unlinked
        assert (n_img, n_txt) == (2173, 2173)
    else:  # drop: one half removed; zero: one half zero-filled (present = 0), not loaded
        assert n_img + n_txt == 2 * 1086 + 1087
    result = train(store, tmp_path / "run", {"method": "retrieval-hash", "device": "cpu", "plots": False,
                                             "method_options": {**FAST, "epochs": 1}})
    used = result["metrics"]["retrieval"]["rows_used"]
    assert used == {"linked_pairs": 1086, "unpaired_image": n_img - 1086, "unpaired_text": n_txt - 1086}


def test_every_pair_broken(wiki_features: Path, tmp_path: Path) -> None:
    """CCA and the two-tower model need pairs; the hashing model learns from labels alone."""
    store = bench_store(wiki_features, tmp_path / "u", ratio=1.0)
    for method in ("retrieval-cca", "retrieval-twotower"):
        with pytest.raises(DataError, match=r"0 linked training pair.*retrieval-hash"):
            train(store, tmp_path / method, {"method": method, "device": "cpu"})
    result = train(store, tmp_path / "hash", {"method": "retrieval-hash", "device": "cpu", "plots": False,
                                              "method_options": FAST})
    assert result["metrics"]["methods"]["retrieval-hash"]["test"]["map_mean"] > 0.13  # above chance (0.118)


def test_bad_input(wiki_features: Path, r0: Path, tmp_path: Path) -> None:
    data = load_retrieval(r0)
    # labels missing: the supervised hashing model refuses, naming the methods that need none
    data.train.rows["text"].y[:5] = -1
    with pytest.raises(DataError, match=r"5 training row\(s\) of 'text' have no label.*retrieval-cca"):
        HashModel(16, [], 1, 128, 1e-3, 1.0, 1.0, 0.0).fit(data, seed=0)
    # a modality with no training rows
    data = load_retrieval(r0)
    r = data.train.rows["image"]
    r.x, r.y, r.pair, r.ids = r.x[:0], r.y[:0], r.pair[:0], r.ids[:0]
    with pytest.raises(DataError, match="modality 'image' has no training rows"):
        HashModel(16, [], 1, 128, 1e-3, 1.0, 1.0, 0.0).fit(data, seed=0)
    # a query side without one modality (every test pair broken, one half dropped, all kept as image)
    store = bench_store(wiki_features, tmp_path / "u", test_ratio=1.0, keep="image")
    with pytest.raises(DataError, match=r"split 'test' \(query\) has no 'text' rows"):
        train(store, tmp_path / "q", {"method": "retrieval-cca", "device": "cpu"})
    # no query split: falls back to val, else to train (in-sample), and says so
    assert load_retrieval(r0, query_split="val").protocol["query"] == "train"
    assert "in-sample" in load_retrieval(r0, query_split="val").protocol["notes"][0]


def test_multilabel_relevance_in_training(r0: Path) -> None:
    """Multi-hot labels (as DCMH/DADH stores hold): the hashing model trains on label overlap."""
    data = load_retrieval(r0)
    rng = np.random.default_rng(0)
    for split in data.splits.values():
        for rows in split.rows.values():
            hot = torch.nn.functional.one_hot(rows.y, 10).to(torch.uint8)
            hot[torch.as_tensor(rng.random(len(hot)) < 0.2), 0] = 1  # some rows also in class 0
            rows.y = hot
    data.multilabel = True
    model = HashModel(16, [32], 2, 128, 1e-3, 1.0, 1.0, 0.0).fit(data, seed=0)
    assert model.encode(data.query.rows["text"].x, 1).shape == (693, 16)


def test_dadh_store_uses_its_database_split_and_multi_hot_labels(tmp_path: Path) -> None:
    """A DADH-format multi-label set (features + tags + multi-hot labels) with DADH's split: queries
    are the query block, the database is the database split (not the queries), relevance = a
    shared label; training learns from label overlap (multi-hot)."""
    import scipy.io

    import prep

    rng = np.random.default_rng(0)
    n, c = 300, 6
    labels = (rng.random((n, c)) < 0.25).astype(np.float64)
    labels[labels.sum(1) == 0, rng.integers(0, c)] = 1
    img = labels @ rng.normal(size=(c, 24)) + 0.8 * rng.normal(size=(n, 24))
    tags = labels @ rng.normal(size=(c, 16)) + 0.8 * rng.normal(size=(n, 16))
    scipy.io.savemat(tmp_path / "toy.mat", {"images": img, "YAll": tags, "LAll": labels})
    prep.prepare({"adapter": "dadh", "file": str(tmp_path / "toy.mat"), "split": "dadh", "query_size": 50,
                  "train_size": 150}, tmp_path / "prep")
    embed.embed(tmp_path / "prep", tmp_path / "embed", {"dim": 0})
    store = bench_store(tmp_path / "embed", tmp_path / "unpair", ratio=0.5)
    result = train(store, tmp_path / "run", {"method": "retrieval-hash", "device": "cpu", "plots": False,
                                             "method_options": {"bits": 16, "hiddens": [32], "epochs": 20}})
    ret = result["metrics"]["retrieval"]
    assert ret["protocol"]["query"] == "test" and ret["protocol"]["database"] == "database"
    assert ret["queries"] == {"i2t": 50, "t2i": 50} and ret["database"] == {"i2t": 250, "t2i": 250}
    assert ret["rows_used"] == {"linked_pairs": 75, "unpaired_image": 38, "unpaired_text": 37}
    share = float(((labels[:50] @ labels[50:].T) > 0).mean())  # chance level of mAP
    m = result["metrics"]["methods"]["retrieval-hash"]["test"]
    assert m["map_i2t"] > share + 0.1 and m["map_t2i"] > share + 0.1, (m["map_i2t"], m["map_t2i"], share)


@pytest.mark.parametrize(("method", "options"), [("retrieval-hash", {}), ("retrieval-twotower", {"labels": True})])
def test_resume_after_a_kill_gives_the_uninterrupted_run(r0: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         method: str, options: dict) -> None:
    """Killed a few optimiser steps into epoch 3 (the checkpoint holds epoch 2), resumed from last.pt:
    the same epoch rows, metrics and final weights, bit for bit, as a run never interrupted."""
    from train.checkpoint import read_verified

    cfg = {"method": method, "device": "cpu", "plots": False, "seed": 5,
           "method_options": {**FAST, "epochs": 4, **options}}
    full = train(r0, tmp_path / "full", cfg)["metrics"]
    rows_full = [json.loads(x) for x in (tmp_path / "full" / "epochs.jsonl").read_text().splitlines()]
    original = torch.optim.Adam.step
    steps = {"n": 0, "kill_after": 0}

    def counted(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        steps["n"] += 1
        if steps["kill_after"] and steps["n"] > steps["kill_after"]:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    train(r0, tmp_path / "count", {**cfg, "method_options": {**cfg["method_options"], "epochs": 1}})
    steps.update(kill_after=2 * steps["n"] + 3, n=0)  # a few steps into epoch 3
    with pytest.raises(KeyboardInterrupt):
        train(r0, tmp_path / "cut", cfg)
    monkeypatch.setattr(torch.optim.Adam, "step", original)
    assert read_verified(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 2
    again = train(r0, tmp_path / "cut", cfg)["metrics"]
    assert again["resumed"] and not full["resumed"]
    assert again["methods"] == full["methods"]
    rows = [json.loads(x) for x in (tmp_path / "cut" / "epochs.jsonl").read_text().splitlines()]
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows_full]
    a = read_verified(tmp_path / "full" / "checkpoints" / "last.pt")
    b = read_verified(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    for na, nb in zip(a["nets"], b["nets"]):
        assert all(torch.equal(na[k], nb[k]) for k in na)
    # a checkpoint of another run is refused, naming the field
    (tmp_path / "cut" / "run.json").unlink()
    other = {**cfg, "method_options": {**cfg["method_options"], "lr": 5e-4}}
    with pytest.raises(ConfigError, match=r"fields that differ: options.*'lr': 0.0005"):
        train(r0, tmp_path / "cut", other)


def test_zero_vector_form_links_each_zero_half_to_its_partner(wiki_features: Path, tmp_path: Path) -> None:
    """zero_input = 'zero-vector' (UMML's form) on a 'zero' store: the zero-filled halves are loaded with
    all-zero features and their pair's label, each linked to its present partner, so every training
    pair is a pair again; 'skip' (the default) leaves them out; a 'drop' store has none to add."""
    store = bench_store(wiki_features, tmp_path / "z", ratio=0.5, mode="zero")
    skip = load_retrieval(store)
    data = load_retrieval(store, zero_input="zero-vector")
    assert len(skip.linked()[0]) == 1086 and skip.train.n("image") + skip.train.n("text") == 2 * 1086 + 1087
    ia, ib = data.linked()
    assert len(ia) == 2173 and data.train.n("image") == data.train.n("text") == 2173
    a, b = data.train.rows["image"], data.train.rows["text"]
    assert bool((a.y[ia] == b.y[ib]).all())
    zero_a, zero_b = (a.x == 0).all(1), (b.x == 0).all(1)
    assert int(zero_a.sum()) + int(zero_b.sum()) == 1087 and not bool((zero_a & zero_b).any())
    assert data.query.n("image") == skip.query.n("image") == 693  # queries: present rows only
    assert "zero-vector" in data.protocol["notes"][-1]
    result = train(store, tmp_path / "run", {"method": "retrieval-twotower", "device": "cpu", "plots": False,
                                             "method_options": {**FAST, "epochs": 1, "zero_input": "zero-vector"}})
    assert result["metrics"]["retrieval"]["rows_used"] == {"linked_pairs": 2173, "unpaired_image": 0,
                                                           "unpaired_text": 0}
    drop = bench_store(wiki_features, tmp_path / "d", ratio=0.5, mode="drop")
    assert len(load_retrieval(drop, zero_input="zero-vector").linked()[0]) == 1086
    with pytest.raises(DataError, match="zero_input"):
        load_retrieval(store, zero_input="mean")
