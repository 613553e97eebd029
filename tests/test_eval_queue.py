"""Evaluation in a background thread (train.eval_queue, ``[train] eval_background``) gives the same
runs, bit for bit, as the synchronous evaluation: rows, checkpoints, final metrics, weights."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.data import BenchmarkData
from train.dm2c import FaithfulTrainer, background_eval
from train.dm2c_stacked import StackedTrainer
from train.eval_queue import EvalQueue

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = {"device": "cpu", "threads": 1, "pretrain_epochs": 2, "epochs": 6, "n_init": 3, "checkpoint_every": 4}


def _cfg(seed: int, background: str, **over: object) -> TrainConfig:
    return TrainConfig.from_dict({"seed": seed, "eval_background": background, **SHORT, **over})


def _rows(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_queue_keeps_push_order_and_raises_job_errors() -> None:
    with EvalQueue(background=True, threads=1) as q:
        q.push("a", lambda: (time.sleep(0.05), "A")[1])
        q.push("b")  # no job: waits behind a
        q.push("c", lambda: threading.current_thread().name)
        got = list(q.ready(wait=True))
    assert [i for i, _ in got] == ["a", "b", "c"]
    assert got[0][1] == "A" and got[1][1] is None and got[2][1].startswith("mixbench-eval")
    with EvalQueue(background=False) as q:
        q.push("x", lambda: threading.current_thread().name)
        assert list(q.ready()) == [("x", threading.current_thread().name)]
    with EvalQueue(background=True, threads=1) as q:
        q.push("bad", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            list(q.ready(wait=True))


def test_auto_needs_cpu_one_thread_and_a_second_core(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cfg = torch.device("cpu"), _cfg(0, "auto")
    assert TrainConfig().eval_background == "off"  # opt-in: the gain is uneven (train.eval_queue)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert background_eval(cfg, cpu, 1) and not background_eval(cfg, cpu, None)
    assert not background_eval(cfg, torch.device("cuda"), 1) and not background_eval(_cfg(0, "off"), cpu, 1)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert not background_eval(cfg, cpu, 1) and background_eval(_cfg(0, "on"), cpu, 1)


def test_background_solo_run_equals_synchronous(wiki_bench: Path, tmp_path: Path) -> None:
    data = BenchmarkData.from_store(wiki_bench)
    runs = {}
    for mode in ("off", "on"):
        seen: list[tuple[str, int]] = []
        t = FaithfulTrainer(_cfg(1, mode), data, checkpoint_dir=tmp_path / mode,
                            callback=lambda phase, epoch, row: seen.append((phase, epoch)))
        saves: list[tuple[str, int, int, bool]] = []
        save = t.save_checkpoint

        def spy(phase_end: bool = False, t: FaithfulTrainer = t, saves: list = saves, save=save) -> Path | None:
            joint = [r for r in t.history if r["phase"] == "joint"]
            saves.append((t.phases[t.phase_index], t.epoch, len(t.history), all("test_acc" in r for r in joint)))
            return save(phase_end)

        t.save_checkpoint = spy  # type: ignore[method-assign]
        ev = t.run()
        runs[mode] = (t, ev, seen)
        # every checkpoint (the one at joint epoch 4 of 6 included) holds every row so far, evaluated
        assert ("joint", 4, 2 + 2 + 4, True) in saves and all(ok for *_, ok in saves)
    (a, ev_a, seen_a), (b, ev_b, seen_b) = runs["off"], runs["on"]
    assert _rows(a.history) == _rows(b.history)  # losses, k-means seeds, every metric, exactly
    assert seen_a == seen_b == [(r["phase"], r["epoch"]) for r in a.history]
    assert ev_a.metrics == ev_b.metrics and ev_a.kmeans_seed == ev_b.kmeans_seed
    for pa, pb in zip(a.net.state_dict().values(), b.net.state_dict().values()):
        assert torch.equal(pa, pb)
    for mode in ("off", "on"):
        assert _rows(load_checkpoint(tmp_path / mode / "last.pt")["history"]) == _rows(a.history)


def test_background_stacked_run_equals_synchronous(wiki_bench: Path) -> None:
    data = BenchmarkData.from_store(wiki_bench)
    histories = {}
    for mode in ("off", "on"):
        trainers = [FaithfulTrainer(_cfg(s, mode), data) for s in (0, 1)]
        evs = StackedTrainer(trainers).run()
        histories[mode] = ([_rows(t.history) for t in trainers], [ev.metrics for ev in evs])
    assert histories["off"] == histories["on"]
    assert all("test_acc" in r for h in histories["on"][0] for r in h if r["phase"] == "joint")
