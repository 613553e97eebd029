"""Shared fixtures. Tests run on CPU, offline, and quickly (the whole suite well under 15 min
on 2 cores). Data: the real Wikipedia features shipped in data/wikipedia (and the UCI
Multiple Features CSVs in data/uci-mfeat); tests needing ../shared/data skip without it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def wikipedia_dir() -> Path:
    d = REPO / "data" / "wikipedia"
    if not (d / "raw_features.mat").exists():
        pytest.skip("data/wikipedia is absent")
    return d


@pytest.fixture(scope="session")
def uci_dir() -> Path:
    d = REPO / "data" / "uci-mfeat"
    if not any(d.glob("mfeat-*.csv*")):
        pytest.skip("data/uci-mfeat is absent")
    return d


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    d = Path(os.environ.get("MIXBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        pytest.skip(f"shared data folder {d} is absent")
    return d


@pytest.fixture(scope="session")
def wiki_paired(tmp_path_factory: pytest.TempPathFactory, wikipedia_dir: Path) -> Path:
    """The Wikipedia paired store (prep output), built once per test session. Read-only."""
    import prep

    out = tmp_path_factory.mktemp("wiki") / "prep"
    prep.prepare({"adapter": "wikipedia", "root": str(wikipedia_dir), "shard_rows": 1000}, out)
    return out


@pytest.fixture(scope="session")
def wiki_bench(tmp_path_factory: pytest.TempPathFactory, wiki_paired: Path) -> Path:
    """A Wikipedia benchmark store (10-d whitened PCA, every pair broken; store_helpers.build_wiki_benchmark),
    built once per test session. Read-only."""
    from store_helpers import build_wiki_benchmark

    return build_wiki_benchmark(wiki_paired, tmp_path_factory.mktemp("wiki-bench") / "bench")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small problems run as fast on one torch thread, and a shared 2-core CI machine does not
    stall them in thread barriers. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; the count is restored after."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
