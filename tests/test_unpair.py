"""The unpair stage on the real Wikipedia store (image 128-d, text 10-d; 2,173 train / 693 test pairs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

import unpair
from mixbench.errors import ConfigError, DataError, StoreError
from mixbench.store.shards import Store, StoreWriter, feature_schema
from unpair import UnpairConfig
from unpair import stage as unpair_stage
from unpair.strategies import ranks_of, stratified_ranks

N_TRAIN, N_TEST = 2173, 693
MODS = ("image", "text")
SCORER = {"score_epochs": 2, "score_window": 2, "score_hidden": 32, "score_dim": 16, "score_batch_size": 512, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(src: Path, out: Path, **cfg) -> dict:
    return unpair.unpair(src, out, cfg, progress=False)


def tables(path: Path, split: str) -> dict[str, dict[str, np.ndarray]]:
    store = Store(path)
    return {m: store.load(split, m) for m in store.modalities}


def selection(path: Path, split: str = "train") -> dict[str, np.ndarray]:
    with h5py.File(Store(path).file("selection.h5"), "r") as f:
        g = f[split]
        out = {k: g[k][...] for k in g if isinstance(g[k], h5py.Dataset)}
        out["kept"] = g["kept"].asstr()[...]
        out.update({f"id_{m}": g["id"][m].asstr()[...] for m in g["id"]})
        out["attrs"] = dict(g.attrs)
    return out


def by_pair(table: dict[str, np.ndarray]) -> dict[int, int]:
    return {int(p): i for i, p in enumerate(table["pair"]) if p >= 0}


@pytest.fixture(scope="module")
def source(wiki_paired: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    return {split: tables(wiki_paired, split) for split in ("train", "test")}


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_exact_counts_both_splits_balanced_halves(wiki_paired, tmp_path, ratio):
    m = run(wiki_paired, tmp_path / "b", ratio=ratio, test_ratio=ratio, seed=1)
    assert m["kind"] == "benchmark"
    info = m["info"]["unpair"]["splits"]
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        k = math.floor(ratio * n + 0.5)
        t = tables(tmp_path / "b", split)
        n_img, n_txt = (int((t[mod]["pair"] == -1).sum()) for mod in MODS)
        assert n_img + n_txt == k  # drop mode: one surviving row per broken pair
        assert (n_img, n_txt) == (math.ceil(k / 2), k // 2)  # balanced, the odd one to the first modality
        assert len(t["image"]["id"]) == len(t["text"]["id"]) + (n_img - n_txt) == n - k + n_img
        linked = [set(t[mod]["pair"][t[mod]["pair"] >= 0].tolist()) for mod in MODS]
        assert linked[0] == linked[1] and len(linked[0]) == n - k
        assert info[split]["n_broken"] == k and info[split]["n_pairs"] == n
        assert info[split]["kept"] == {"image": n_img, "text": n_txt}
        assert info[split]["rows_out"] == {"image": n - k + n_img, "text": n - k + n_txt}
        assert info[split]["count_rule"] == "floor(ratio * n_pairs + 0.5)"
    assert info["test"]["strategy"] == "random" and "loss ranking exists only for train" in info["test"]["note"]


def test_balance_classes(wiki_paired, tmp_path):
    m = run(wiki_paired, tmp_path / "b", ratio=1.0, balance_classes=True, seed=4)
    t = tables(tmp_path / "b", "train")
    n_img, n_txt = len(t["image"]["id"]), len(t["text"]["id"])
    assert n_img + n_txt == N_TRAIN and abs(n_img - n_txt) <= 1
    for c in range(10):
        assert abs(int((t["image"]["label"] == c).sum()) - int((t["text"]["label"] == c).sum())) <= 1
    per_class = m["info"]["unpair"]["splits"]["train"]["per_class"]
    assert all(abs(r["kept_image"] - r["kept_text"]) <= 1 for r in per_class.values())
    assert sum(r["broken"] for r in per_class.values()) == N_TRAIN


def test_unbalanced_classes_without_the_option(wiki_paired, tmp_path):
    """Without balance_classes the halves are balanced overall only (so the option does something)."""
    run(wiki_paired, tmp_path / "b", ratio=1.0, seed=4)
    t = tables(tmp_path / "b", "train")
    diffs = [abs(int((t["image"]["label"] == c).sum()) - int((t["text"]["label"] == c).sum())) for c in range(10)]
    assert max(diffs) > 1


def test_keep_one_modality(wiki_paired, tmp_path):
    run(wiki_paired, tmp_path / "b", ratio=0.5, keep="text", seed=0)
    t = tables(tmp_path / "b", "train")
    assert int((t["image"]["pair"] == -1).sum()) == 0
    assert int((t["text"]["pair"] == -1).sum()) == math.floor(0.5 * N_TRAIN + 0.5)


def test_determinism(wiki_paired, tmp_path):
    cfg = {"ratio": 0.4, "test_ratio": 0.2, "seed": 7}
    a = run(wiki_paired, tmp_path / "a", **cfg)
    b = run(wiki_paired, tmp_path / "b", **cfg)
    c = run(wiki_paired, tmp_path / "c", **{**cfg, "seed": 8})
    sha = lambda m: [(s["file"], s["sha256"]) for s in m["shards"]] + [(f["file"], f["sha256"]) for f in m["files"]]
    assert sha(a) == sha(b)
    assert sha(a) != sha(c)
    sa, sc = selection(tmp_path / "a"), selection(tmp_path / "c")
    assert sa["broken"].sum() == sc["broken"].sum() and not np.array_equal(sa["broken"], sc["broken"])


def test_mode_drop(wiki_paired, tmp_path, source):
    run(wiki_paired, tmp_path / "b", ratio=0.5, mode="drop", seed=2)
    src, t, sel = source["train"], tables(tmp_path / "b", "train"), selection(tmp_path / "b")
    broken = sel["broken"].astype(bool)
    for mod in MODS:
        kept_here = sel["pair"][sel["kept"] == mod]
        removed = sel["pair"][broken & (sel["kept"] != mod)]
        assert set(t[mod]["id"].tolist()) == set(src[mod]["id"].tolist()) - set(sel[f"id_{mod}"][np.isin(sel["pair"], removed)].tolist())
        ids_kept = set(sel[f"id_{mod}"][np.isin(sel["pair"], kept_here)].tolist())
        rows = np.isin(t[mod]["id"], list(ids_kept))
        assert rows.sum() == len(kept_here) and (t[mod]["pair"][rows] == -1).all()
        # unbroken rows keep their pair id, label and features
        s_index = {i: r for r, i in enumerate(src[mod]["id"])}
        r_src = np.array([s_index[i] for i in t[mod]["id"]])
        assert np.array_equal(t[mod]["feat"], src[mod]["feat"][r_src])
        assert np.array_equal(t[mod]["label"], src[mod]["label"][r_src])
        still = t[mod]["pair"] >= 0
        assert np.array_equal(t[mod]["pair"][still], src[mod]["pair"][r_src][still])
    assert "present" not in Store(tmp_path / "b").schema["image"]


def test_mode_zero(wiki_paired, tmp_path, source):
    m = run(wiki_paired, tmp_path / "b", ratio=0.5, mode="zero", seed=2)
    src, t, sel = source["train"], tables(tmp_path / "b", "train"), selection(tmp_path / "b")
    broken_pairs = set(sel["pair"][sel["broken"].astype(bool)].tolist())
    assert m["modalities"]["image"]["present"] == {"dtype": "uint8", "shape": []}
    for mod in MODS:
        assert np.array_equal(t[mod]["id"], src[mod]["id"])  # every row stays in place
        was_broken = np.isin(src[mod]["pair"], list(broken_pairs))
        assert np.array_equal(t[mod]["pair"], np.where(was_broken, -1, src[mod]["pair"]))
        kept_pairs = set(sel["pair"][sel["kept"] == mod].tolist())
        missing = was_broken & ~np.isin(src[mod]["pair"], list(kept_pairs))
        assert np.array_equal(t[mod]["present"], (~missing).astype(np.uint8))
        assert (t[mod]["feat"][missing] == 0).all()
        assert np.array_equal(t[mod]["feat"][~missing], src[mod]["feat"][~missing])
        assert np.array_equal(t[mod]["label"], src[mod]["label"])
    n_missing = sum(int((t[mod]["present"] == 0).sum()) for mod in MODS)
    assert n_missing == len(broken_pairs) == math.floor(0.5 * N_TRAIN + 0.5)
    # a pair is never emptied on both sides
    img_missing = set(src["image"]["pair"][t["image"]["present"] == 0].tolist())
    txt_missing = set(src["text"]["pair"][t["text"]["present"] == 0].tolist())
    assert not img_missing & txt_missing
    assert (tables(tmp_path / "b", "test")["image"]["present"] == 1).all()


def test_mode_decouple(wiki_paired, tmp_path, source):
    run(wiki_paired, tmp_path / "b", ratio=0.3, mode="decouple", seed=2)
    src, t, sel = source["train"], tables(tmp_path / "b", "train"), selection(tmp_path / "b")
    broken_pairs = sel["pair"][sel["broken"].astype(bool)]
    assert set(sel["kept"][sel["broken"].astype(bool)].tolist()) == {"both"}
    for mod in MODS:
        assert np.array_equal(t[mod]["id"], src[mod]["id"]) and np.array_equal(t[mod]["feat"], src[mod]["feat"])
        was_broken = np.isin(src[mod]["pair"], broken_pairs)
        assert np.array_equal(t[mod]["pair"], np.where(was_broken, -1, src[mod]["pair"]))
        assert int(was_broken.sum()) == math.floor(0.3 * N_TRAIN + 0.5)


@pytest.mark.parametrize("mode", ["drop", "zero", "decouple"])
def test_test_pairs_untouched_by_default(wiki_paired, tmp_path, source, mode):
    run(wiki_paired, tmp_path / "b", ratio=1.0, mode=mode)
    t = tables(tmp_path / "b", "test")
    for mod in MODS:
        for col in ("id", "label", "pair", "feat"):
            assert np.array_equal(t[mod][col], source["test"][mod][col])


def test_loss_strategies_pick_the_right_ranks(wiki_paired, tmp_path):
    ratio = 0.3
    k = math.floor(ratio * N_TRAIN + 0.5)
    scores = None
    for strategy in ("loss-highest", "loss-lowest", "loss-stratified"):
        m = run(wiki_paired, tmp_path / strategy, ratio=ratio, strategy=strategy, seed=3, **SCORER)
        sel = selection(tmp_path / strategy)
        assert np.array_equal(sel["pair"], np.sort(sel["pair"])) and len(sel["pair"]) == N_TRAIN
        assert np.array_equal(sel["rank"], ranks_of(sel["score"]))
        assert sel["per_epoch_score"].shape == (2, N_TRAIN) and len(sel["train_loss"]) == 2
        assert np.allclose(sel["score"], sel["per_epoch_score"].astype(np.float64).mean(0))
        if scores is None:
            scores = sel["score"]
        assert np.array_equal(sel["score"], scores)  # same seed and scorer → same scores
        broken_ranks = np.sort(sel["rank"][sel["broken"].astype(bool)])
        expected = {
            "loss-highest": np.arange(N_TRAIN - k, N_TRAIN),
            "loss-lowest": np.arange(k),
            "loss-stratified": stratified_ranks(N_TRAIN, k),
        }[strategy]
        assert np.array_equal(broken_ranks, expected)
        info = m["info"]["unpair"]
        assert info["splits"]["train"]["n_broken"] == k and info["splits"]["train"]["strategy"] == strategy
        assert info["scorer"]["epochs"] == 2 and np.isfinite(info["scorer"]["final_train_loss"])
        assert info["scorer"]["n_negatives"] == N_TRAIN - 1
        # the broken pairs in the store are exactly the chosen ids
        t = tables(tmp_path / strategy, "train")
        ids_out = set(t["image"]["id"][t["image"]["pair"] == -1].tolist()) | set(t["text"]["id"][t["text"]["pair"] == -1].tolist())
        chosen = sel["broken"].astype(bool)
        kept_ids = set(sel["id_image"][chosen & (sel["kept"] == "image")].tolist()) | set(sel["id_text"][chosen & (sel["kept"] == "text")].tolist())
        assert ids_out == kept_ids
    hi = selection(tmp_path / "loss-highest")
    lo = selection(tmp_path / "loss-lowest")
    assert hi["score"][hi["broken"].astype(bool)].min() >= lo["score"][lo["broken"].astype(bool)].max()


def test_positional_matches_the_umml_rule(wiki_paired, tmp_path):
    m = run(wiki_paired, tmp_path / "b", ratio=0.2, strategy="positional", mode="decouple")
    sel = selection(tmp_path / "b")
    counter = np.arange(N_TRAIN) % 99
    assert np.array_equal(sel["broken"].astype(bool), counter < 20)
    n = 21 * 20 + min(N_TRAIN - 21 * 99, 20)  # 21 full periods of 99, then the rest
    info = m["info"]["unpair"]["splits"]["train"]
    assert info["n_broken"] == n == 440 and info["p"] == 20 and info["period"] == 99
    assert "counter" in info["count_rule"]
    t = tables(tmp_path / "b", "train")
    src = Store(wiki_paired).load("train", "image", ["pair"])["pair"]
    first_pairs = np.sort(src)[:99]
    broken_in_first_period = set(first_pairs[t["image"]["pair"][np.argsort(src)][:99] == -1].tolist())
    assert broken_in_first_period == set(first_pairs[:20].tolist())


def test_config_errors(wiki_paired, tmp_path):
    with pytest.raises(ConfigError, match=r"ratio = 1\.5: must be a number in \[0, 1\]"):
        run(wiki_paired, tmp_path / "b", ratio=1.5)
    with pytest.raises(ConfigError, match="ratio"):
        UnpairConfig(ratio=-0.1)
    with pytest.raises(ConfigError, match="unknown key 'ration'. Did you mean 'ratio'"):
        UnpairConfig.from_dict({"ration": 0.5})
    with pytest.raises(ConfigError, match="choose one of random, loss-highest"):
        UnpairConfig.from_dict({"strategy": "hardest"})
    with pytest.raises(ConfigError, match="must be one of 'drop', 'zero', 'decouple'"):
        UnpairConfig.from_dict({"mode": "mask"})
    with pytest.raises(ConfigError, match="score_window"):
        UnpairConfig.from_dict({"score_epochs": 3, "score_window": 4})
    with pytest.raises(ConfigError, match="keep = 'audio': not a modality.*image, text"):
        run(wiki_paired, tmp_path / "b", keep="audio")
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_reuse_overwrite_and_lineage(wiki_paired, tmp_path):
    first = run(wiki_paired, tmp_path / "b", ratio=0.5)
    again = run(wiki_paired, tmp_path / "b", ratio=0.5)
    assert again["reused"] is True and again["shards"] == first["shards"]
    with pytest.raises(StoreError, match="overwrite"):
        run(wiki_paired, tmp_path / "b", ratio=0.4)
    m = unpair.unpair(wiki_paired, tmp_path / "b", {"ratio": 0.4}, overwrite=True, progress=False)
    assert m["info"]["unpair"]["splits"]["train"]["n_broken"] == math.floor(0.4 * N_TRAIN + 0.5)
    lin = m["lineage"]
    assert [e["stage"] for e in lin] == ["prep", "unpair"]
    assert lin[-1]["config"]["ratio"] == 0.4 and lin[-1]["seed"] == 0
    assert lin[-1]["inputs"]["store"]["manifest_sha256"] == Store(wiki_paired).manifest_sha256
    # one output shard per input shard; the store verifies
    src_shards = [(s["split"], s["index"]) for s in Store(wiki_paired).manifest["shards"]]
    assert [(s["split"], s["index"]) for s in m["shards"]] == src_shards
    assert Store(tmp_path / "b").verify() == []
    # a benchmark is not an input
    with pytest.raises(StoreError, match="already a benchmark"):
        run(tmp_path / "b", tmp_path / "c")


def _small_store(
    path: Path, text_pairs: list[int], text_labels: list[int] | None = None, image_pairs: list[int] | None = None
) -> Path:
    rng = np.random.default_rng(0)
    schema = {"image": feature_schema(4), "text": feature_schema(3)}
    w = StoreWriter(path, kind="features", dataset="toy", classes=["a", "b"], schema=schema, lineage=[], run_key="k")
    n = len(text_pairs)
    for split in ("train", "test"):
        w.write_shard(split, 0, {
            "image": {"id": [f"i{j}" for j in range(n)], "label": [j % 2 for j in range(n)],
                      "pair": image_pairs or list(range(n)),
                      "feat": rng.normal(size=(n, 4))},
            "text": {"id": [f"t{j}" for j in range(n)], "label": text_labels or [j % 2 for j in range(n)],
                     "pair": text_pairs, "feat": rng.normal(size=(n, 3))},
        })
    w.finish()
    return path


def test_bad_links_are_named(tmp_path):
    src = _small_store(tmp_path / "dup", [0, 1, 1, 3])
    with pytest.raises(DataError, match=r"train-00000\.h5:2 \[text\.pair\]: pair id 1 appears more than once"):
        run(src, tmp_path / "o")
    src = _small_store(tmp_path / "orphan", [0, 1, 2, 7])
    with pytest.raises(DataError, match=r"pair id 3 has no 'text' row"):
        run(src, tmp_path / "o")
    src = _small_store(tmp_path / "label", [0, 1, 2, 3], text_labels=[0, 1, 1, 1])
    with pytest.raises(DataError, match=r"pair 2 has label 0 in 'image' but 1 in 'text'"):
        run(src, tmp_path / "o")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_unlinked_rows_pass_through(tmp_path):
    src = _small_store(tmp_path / "s", [0, 1, -1, 3, 4, 5], image_pairs=[0, 1, -1, 3, 4, 5])
    m = run(src, tmp_path / "o", ratio=1.0, mode="zero")
    info = m["info"]["unpair"]["splits"]["train"]
    assert info["n_pairs"] == 5 and info["n_broken"] == 5
    assert info["unlinked_rows_in"] == {"image": 1, "text": 1}
    t = tables(tmp_path / "o", "train")
    for mod in MODS:
        assert (t[mod]["pair"] == -1).all()
        assert t[mod]["present"][2] == 1  # the unlinked row is untouched, not emptied
    assert int(t["image"]["present"].sum() + t["text"]["present"].sum()) == 5 + 2


def test_three_modalities_rejected(tmp_path):
    schema = {m: feature_schema(2) for m in ("a", "b", "c")}
    w = StoreWriter(tmp_path / "s", kind="features", dataset="toy", classes=["x"], schema=schema, lineage=[], run_key="k")
    w.write_shard("train", 0, {m: {"id": ["0"], "label": [0], "pair": [0], "feat": np.zeros((1, 2))} for m in schema})
    w.finish()
    with pytest.raises(StoreError, match="exactly two modalities, the store has 3"):
        run(tmp_path / "s", tmp_path / "o")


def test_selection_file_and_summary(wiki_paired, tmp_path):
    m = run(wiki_paired, tmp_path / "b", ratio=0.25, test_ratio=0.1, seed=5)
    assert [f["file"] for f in m["files"]] == ["selection.h5"]
    with h5py.File(Store(tmp_path / "b").file("selection.h5"), "r") as f:
        summary = json.loads(f.attrs["summary"])
        assert set(f) == {"train", "test"} and "score" not in f["train"]
        assert f["test"].attrs["strategy"] == "random" and int(f["test"].attrs["n_broken"]) == 69
    assert summary["splits"]["train"]["n_broken"] == m["info"]["unpair"]["splits"]["train"]["n_broken"] == 543
    sel = selection(tmp_path / "b", "test")
    assert len(sel["pair"]) == N_TEST and int(sel["broken"].sum()) == 69
    assert m["info"]["pairs"] == {"train": N_TRAIN, "test": N_TEST}  # the source's info is kept


def test_score_cache_shares_a_seeds_scores_across_ratios_and_strategies(wiki_paired, tmp_path, monkeypatch):
    """The sweep's scorer cache: the second unpair (another ratio and strategy, same seed) reads the
    first one's scores instead of training the scorer; its store equals the one written without the cache."""
    cache = tmp_path / "scores"
    kw = dict(seed=3, **SCORER)
    unpair.unpair(wiki_paired, tmp_path / "a", {"ratio": 0.3, "strategy": "loss-highest", **kw}, progress=False,
                  score_cache=cache)
    assert len(list(cache.glob("scores-*.npz"))) == 1 and not list(cache.glob(".*.tmp"))
    plain = unpair.unpair(wiki_paired, tmp_path / "plain", {"ratio": 0.6, "strategy": "loss-lowest", **kw}, progress=False)

    def refuse(*a, **k):
        raise AssertionError("the scorer trained again despite a cached result")

    monkeypatch.setattr(unpair_stage, "score_pairs", refuse)
    cached = unpair.unpair(wiki_paired, tmp_path / "b", {"ratio": 0.6, "strategy": "loss-lowest", "mode": "decouple",
                                                         **kw}, progress=False, score_cache=cache)
    again = unpair.unpair(wiki_paired, tmp_path / "c", {"ratio": 0.6, "strategy": "loss-lowest", **kw}, progress=False,
                          score_cache=cache)
    sha = lambda m: [(s["file"], s["sha256"]) for s in m["shards"]] + [(f["file"], f["sha256"]) for f in m["files"]]
    assert sha(again) == sha(plain)  # shards and selection file byte for byte
    assert again["info"]["unpair"]["scorer"] == plain["info"]["unpair"]["scorer"]
    sp, sc = selection(tmp_path / "plain"), selection(tmp_path / "c")
    for key in ("score", "rank", "per_epoch_score", "broken", "train_loss"):
        assert np.array_equal(sp[key], sc[key]), key
    assert cached["info"]["unpair"]["splits"]["train"]["n_broken"] == plain["info"]["unpair"]["splits"]["train"]["n_broken"]
    # a damaged cache file is refused, naming the file and the fix (never read as scores)
    [entry] = cache.glob("scores-*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.raises(StoreError, match=rf"{entry.name}: cached loss scores for split 'train' cannot be read.*delete"):
        unpair.unpair(wiki_paired, tmp_path / "e", {"ratio": 0.5, "strategy": "loss-lowest", **kw}, progress=False,
                      score_cache=cache)
    # another seed is another key: the scorer would train (and is refused here)
    with pytest.raises(AssertionError, match="trained again"):
        unpair.unpair(wiki_paired, tmp_path / "d", {"ratio": 0.6, "strategy": "loss-lowest", "seed": 4,
                                                    **SCORER}, progress=False, score_cache=cache)
