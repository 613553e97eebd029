"""mixbench.dist.on_main under torch.distributed: rank 0's result or failure reaches every rank,
and a local rank maps onto the visible GPUs."""

from __future__ import annotations

from typing import Any

import pytest

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
        dist.on_main(_boom)
    assert sent == [("fail", "ValueError: disk full")]  # broadcast first: the other ranks are not left waiting


def test_rank0_returns_its_result_and_shares_it_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _fake_world(monkeypatch, rank=0)
    assert dist.on_main(lambda: 42) == 42
    writer = object()  # e.g. an open store writer: not for pickling
    assert dist.on_main(lambda: writer, share=False) is writer
    assert sent == [("ok", 42), ("ok", None)]


def test_other_ranks_stop_with_rank0s_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, rank=1, box_from_main=("fail", "ValueError: disk full"))
    with pytest.raises(RuntimeError, match=r"rank 0 failed \(ValueError: disk full\)"):
        dist.on_main(lambda: pytest.fail("only rank 0 runs fn"))
    _fake_world(monkeypatch, rank=1, box_from_main=("err", ConfigError("bad dim")))
    with pytest.raises(ConfigError, match="bad dim"):
        dist.on_main(lambda: None)
    _fake_world(monkeypatch, rank=1, box_from_main=("ok", 42))
    assert dist.on_main(lambda: None) == 42


def test_single_process_just_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist, "broadcast_object", lambda *a, **k: pytest.fail("no collective in one process"))
    assert dist.on_main(lambda: 7) == 7
    with pytest.raises(ValueError, match="disk full"):
        dist.on_main(_boom)


@pytest.mark.parametrize(("local_rank", "visible", "expected"), [(0, 4, 0), (3, 4, 3), (3, 1, 0), (5, 2, 1), (2, 0, 0)])
def test_cuda_index_wraps_local_rank_onto_the_visible_gpus(monkeypatch: pytest.MonkeyPatch, local_rank: int,
                                                          visible: int, expected: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    assert dist.cuda_index(local_rank) == expected
