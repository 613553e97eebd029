"""embed.stage._on_main under torch.distributed: rank 0's result or failure reaches every rank."""

from __future__ import annotations

from typing import Any

import pytest

from embed import stage
from mixbench import dist
from mixbench.errors import ConfigError


def _fake_world(monkeypatch: pytest.MonkeyPatch, *, rank: int, box_from_main: Any = None) -> list[Any]:
    sent: list[Any] = []
    monkeypatch.setattr(dist, "info", lambda: dist.DistInfo(rank=rank, world=2, local_rank=rank))

    def broadcast(obj: Any, src: int = 0) -> Any:
        sent.append(obj)
        return obj if rank == 0 else box_from_main

    monkeypatch.setattr(dist, "broadcast_object", broadcast)
    return sent


def _boom() -> None:
    raise ValueError("disk full")


def test_rank0_shares_an_unexpected_failure_before_raising_it(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _fake_world(monkeypatch, rank=0)
    with pytest.raises(ValueError, match="disk full"):
        stage._on_main(_boom)
    assert sent == [("fail", "ValueError: disk full")]  # broadcast first: the other ranks are not left waiting


def test_other_ranks_stop_with_rank0s_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, rank=1, box_from_main=("fail", "ValueError: disk full"))
    with pytest.raises(RuntimeError, match=r"rank 0 failed \(ValueError: disk full\)"):
        stage._on_main(lambda: pytest.fail("only rank 0 runs fn"))
    _fake_world(monkeypatch, rank=1, box_from_main=("err", ConfigError("bad dim")))
    with pytest.raises(ConfigError, match="bad dim"):
        stage._on_main(lambda: None)
    _fake_world(monkeypatch, rank=1, box_from_main=("ok", 42))
    assert stage._on_main(lambda: None) == 42


def test_encode_fit_failure_on_rank0_reaches_the_other_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    from embed import encode

    sent = _fake_world(monkeypatch, rank=0)
    with pytest.raises(ValueError, match="disk full"):
        encode._on_main(dist.info(), _boom)
    assert sent == [("other", "rank 0 failed (ValueError: disk full)")]
    _fake_world(monkeypatch, rank=1, box_from_main=("other", "rank 0 failed (ValueError: disk full)"))
    with pytest.raises(RuntimeError, match=r"rank 0 failed \(ValueError: disk full\)"):
        encode._on_main(dist.info(), lambda: None)
    _fake_world(monkeypatch, rank=1, box_from_main=("ConfigError", "bad vocabulary"))
    with pytest.raises(ConfigError, match="bad vocabulary"):
        encode._on_main(dist.info(), lambda: None)


@pytest.mark.parametrize(("local_rank", "visible", "expected"), [(0, 4, 0), (3, 4, 3), (3, 1, 0), (5, 2, 1), (2, 0, 0)])
def test_cuda_index_wraps_local_rank_onto_the_visible_gpus(monkeypatch: pytest.MonkeyPatch, local_rank: int,
                                                          visible: int, expected: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    assert dist.cuda_index(local_rank) == expected
