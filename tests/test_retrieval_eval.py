"""Retrieval scores against a brute-force implementation written from the definitions (per query,
plain Python), on small data with many Hamming ties, single and multi-hot labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixbench.errors import DataError
from train.retrieval.evaluate import map_at_all, rank_scores


def brute(q, db, ql, dl, ranking, ks, cut):
    """Per query: rank by (distance, index); AP, AP@R, P@k, PR points, from their definitions."""
    nq, nd = len(q), len(db)
    aps, aprs, pks = [], [], np.zeros(len(ks))
    pr_p, pr_r, n_with = np.zeros(len(cut)), np.zeros(len(cut)), 0
    for i in range(nq):
        if ranking == "hamming":
            dist = [sum(1 for a, b in zip(q[i], db[j]) if a != b) for j in range(nd)]
        else:
            qn = q[i] / np.linalg.norm(q[i])
            dist = [-float(qn @ (db[j] / np.linalg.norm(db[j]))) for j in range(nd)]
        order = sorted(range(nd), key=lambda j: (dist[j], j))
        if ql.ndim == 1:
            rel = [ql[i] == dl[j] for j in order]
        else:
            rel = [bool((ql[i] * dl[j]).sum() > 0) for j in order]
        big_r = sum(rel)
        hits, ap, apr = 0, 0.0, 0.0
        cum = []
        for pos, r in enumerate(rel, start=1):
            hits += r
            cum.append(hits)
            if r:
                ap += hits / pos
                if pos <= big_r:
                    apr += hits / pos
        aps.append(ap / big_r if big_r else 0.0)
        aprs.append(apr / big_r if big_r else 0.0)
        pks += [cum[min(k, nd) - 1] / k for k in ks]
        pr_p += [cum[c - 1] / c for c in cut]
        if big_r:
            n_with += 1
            pr_r += [cum[c - 1] / big_r for c in cut]
    return np.mean(aps), np.mean(aprs), pks / nq, pr_p / nq, pr_r / max(1, n_with), aps


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize(("labels", "bits"), [("single", 8), ("single", 16), ("multi", 8), ("multi", 16),
                                              ("multi-70", 70), ("signed", 16),
                                              ("multi", 300)])
def test_hamming_matches_brute_force(labels: str, bits: int, engine: str) -> None:
    """Both engines against the definitions: many ties (duplicated codes, few bits), codes over more
    than one 64-bit word, label sets over more than 64 classes, and signed label vectors (the numpy
    engine then takes the label product, as :func:`relevance`)."""
    rng = np.random.default_rng(bits + len(labels))
    nq, nd, c = 37, 211, 70 if labels == "multi-70" else 5
    q = rng.choice([-1.0, 1.0], size=(nq, bits)).astype(np.float32)
    db = rng.choice([-1.0, 1.0], size=(nd, bits)).astype(np.float32)
    db[:20] = q[0]  # exact duplicates: ties at distance 0
    if labels == "single":
        ql, dl = rng.integers(0, c, nq), rng.integers(0, c, nd)
    else:
        ql = (rng.random((nq, c)) < 0.25).astype(np.int8)
        dl = (rng.random((nd, c)) < 0.25).astype(np.int8)
        ql[3] = 0  # a query sharing no label with anything: AP 0, still counted
        if labels == "signed":
            ql[5:9] -= (rng.random((4, c)) < 0.3).astype(np.int8)
    ks = (1, 5, 10, 300)
    s = rank_scores(torch.tensor(q), torch.tensor(db), torch.tensor(ql), torch.tensor(dl), ranking="hamming",
                    ks=ks, pr_points=7, chunk_elements=5 * nd, keep_ap=True, engine=engine)  # 5 queries per chunk
    m, mr, pk, pp, prr, aps = brute(q, db, ql, dl, "hamming", ks, s.pr_cutoff)
    assert s.map == pytest.approx(m, abs=1e-9) and s.map_at_r == pytest.approx(mr, abs=1e-9)
    assert np.allclose(list(s.precision_at.values()), pk, atol=1e-9)
    assert np.allclose(s.pr_precision, pp, atol=1e-9) and np.allclose(s.pr_recall, prr, atol=1e-9)
    assert np.allclose(s.ap.numpy(), aps, atol=1e-9)
    assert len(s.pr_cutoff) == 7 and s.pr_cutoff[-1] == nd and s.pr_recall[-1] == pytest.approx(1.0)
    # {0, 1} codes rank exactly as ±1 codes
    assert map_at_all(torch.tensor(q > 0), torch.tensor(db > 0), torch.tensor(ql), torch.tensor(dl)) == pytest.approx(s.map, abs=1e-12)


def test_cosine_matches_brute_force_and_ties_go_by_index() -> None:
    rng = np.random.default_rng(3)
    q = rng.normal(size=(23, 6)).astype(np.float32)
    db = rng.normal(size=(150, 6)).astype(np.float32)
    db[40:60] = db[5]  # tied similarities for every query
    ql, dl = rng.integers(0, 4, 23), rng.integers(0, 4, 150)
    s = rank_scores(torch.tensor(q), torch.tensor(db), torch.tensor(ql), torch.tensor(dl), ranking="cosine",
                    ks=(1, 10), pr_points=5, chunk_elements=1000)
    m, mr, pk, pp, prr, _ = brute(q, db, ql, dl, "cosine", (1, 10), s.pr_cutoff)
    assert s.map == pytest.approx(m, abs=1e-6) and s.map_at_r == pytest.approx(mr, abs=1e-6)
    assert np.allclose(list(s.precision_at.values()), pk, atol=1e-6)


def test_perfect_and_bad_input() -> None:
    codes = torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1]])
    labels = torch.tensor([0, 1])
    assert map_at_all(codes, codes, labels, labels) == 1.0
    with pytest.raises(DataError, match="binary codes"):
        map_at_all(codes * 0.5, codes, labels, labels)
    with pytest.raises(DataError, match="share"):
        map_at_all(codes, codes[:, :2], labels, labels)
    with pytest.raises(DataError, match="0 queries"):
        map_at_all(codes[:0], codes, labels[:0], labels)
    with pytest.raises(DataError, match="ranking"):
        map_at_all(codes, codes, labels, labels, ranking="euclid")
    with pytest.raises(DataError, match="engine"):
        map_at_all(codes, codes, labels, labels, engine="gpu")
    with pytest.raises(DataError, match="engine = 'numpy'"):
        map_at_all(codes, codes, labels, labels, ranking="cosine", engine="numpy")


def test_engines_agree_on_heavy_ties() -> None:
    """4-bit codes (5 distances for 3,000 items: ties everywhere) and MIRFlickr-like multi-hot labels:
    the numpy engine (radix sort per query) and the torch engine (flat sort per chunk) give the same
    per-query APs and the same figures."""
    g = torch.Generator().manual_seed(7)
    q = torch.sign(torch.randn(150, 4, generator=g))
    db = torch.sign(torch.randn(3000, 4, generator=g))
    ql = (torch.rand(150, 24, generator=g) < 0.1).to(torch.uint8)
    dl = (torch.rand(3000, 24, generator=g) < 0.1).to(torch.uint8)
    a = rank_scores(q, db, ql, dl, keep_ap=True, engine="numpy", chunk_elements=16 * 3000)
    b = rank_scores(q, db, ql, dl, keep_ap=True, engine="torch")
    assert float((a.ap - b.ap).abs().max()) < 1e-12 and a.queries_without_relevant == b.queries_without_relevant > 0
    assert a.map_at_r == pytest.approx(b.map_at_r, abs=1e-12)
    assert np.allclose(list(a.precision_at.values()), list(b.precision_at.values()), atol=1e-12)
    assert np.allclose(a.pr_precision, b.pr_precision, atol=1e-12) and np.allclose(a.pr_recall, b.pr_recall, atol=1e-12)


def test_bench_baseline_loop_gives_the_same_values(repo_root) -> None:
    """bench/map.py's copy of the DCMH/DADH per-query loop (stable sort) and ours agree per query."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_map", repo_root / "bench" / "map.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    q, r, ql, rl = mod.make_data(40, 3000, 64, 24, 0, torch.device("cpu"))
    base_map, base_ap = mod.baseline_map(q, r, ql, rl)
    ours = rank_scores(q, r, ql, rl, ks=(), pr_points=1, keep_ap=True, chunk_elements=7 * 3000)
    assert abs(ours.map - base_map) < 1e-12 and float((ours.ap - base_ap).abs().max()) < 1e-12
