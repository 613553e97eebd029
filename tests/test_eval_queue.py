"""Evaluation in a background thread or a worker process (train.eval_queue, ``[train] eval_background``)
gives the same runs, bit for bit, as the synchronous evaluation: rows, checkpoints, final metrics, weights."""

from __future__ import annotations

import operator
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.data import BenchmarkData
from train.dm2c import AUTO_PROCESS_MIN_EVALS, FaithfulTrainer, background_eval
from train.dm2c_stacked import StackedTrainer
from train.eval_queue import EvalJob, EvalQueue
from train.registry import get_variant

MODES = ("off", "thread", "process")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = {"device": "cpu", "threads": 1, "pretrain_epochs": 2, "epochs": 6, "n_init": 3, "checkpoint_every": 4}


def _cfg(seed: int, background: str, **over: object) -> TrainConfig:
    return TrainConfig.from_dict({"seed": seed, "eval_background": background, **SHORT, **over})


def _rows(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def _sleep_then(seconds: float, value: str) -> str:
    time.sleep(seconds)
    return value


def _where(seconds: float = 0.0) -> tuple[int, str]:
    time.sleep(seconds)
    return os.getpid(), threading.current_thread().name


@pytest.mark.parametrize("mode", ["sync", "thread", "process"])
def test_queue_keeps_push_order_and_raises_job_errors(mode: str) -> None:
    finished: list[str] = []
    with EvalQueue(mode, threads=1) as q:
        q.push("w", EvalJob(_where))  # the first job: never taken back by the caller
        q.push("a", EvalJob(_sleep_then, (0.05, "A"), lambda r: (finished.append(r), r.lower())[1]))
        q.push("b")  # no job: waits behind a
        got = list(q.ready(wait=True))
    assert [i for i, _ in got] == ["w", "a", "b"] and finished == ["A"]
    assert got[1][1] == "a" and got[2][1] is None
    pid, thread = got[0][1]
    assert (pid != os.getpid()) == (mode == "process")
    assert thread.startswith("mixbench-eval") == (mode == "thread")
    with EvalQueue(mode, threads=1) as q:
        q.push("bad", EvalJob(operator.truediv, (1, 0)))
        with pytest.raises(ZeroDivisionError):
            list(q.ready(wait=True))


def test_caller_takes_jobs_the_worker_process_has_not_started() -> None:
    """A worker that falls behind: the caller runs the oldest waiting job itself, results in order."""
    with EvalQueue("process", threads=1) as q:
        for i in range(6):
            q.push(i, EvalJob(_where, (0.2,)))
        got = list(q.ready(wait=True))
    assert [i for i, _ in got] == list(range(6))
    where = [pid == os.getpid() for _, (pid, _) in got]
    assert not where[0] and any(where)  # the first went to the worker; the caller took some


def test_jobs_of_a_worker_process_that_dies_run_in_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    with EvalQueue("process", threads=1) as q:
        q.push("first", EvalJob(operator.add, (1, 2)))
        assert list(q.ready(wait=True)) == [("first", 3)]
        q.push("killed", EvalJob(_where, (30.0,)))  # in the worker when it is killed: runs again here
        q.push("after", EvalJob(operator.add, (2, 2)))
        worker = q._worker
        assert worker.backlog == 1  # "killed" went to the idle worker, "after" waits
        deadline = time.monotonic() + 30
        with caplog.at_level("WARNING", logger="train.eval_worker"):
            worker._proc.kill()
            while not worker.dead and time.monotonic() < deadline:
                time.sleep(0.01)
        assert worker.dead and "ended with exit code -9" in caplog.text and "2 unfinished job(s)" in caplog.text
        with pytest.MonkeyPatch.context() as mp:  # no 30 s sleep in the rerun
            mp.setattr(time, "sleep", lambda s: None)
            got = list(q.ready(wait=True))
    assert got == [("killed", (os.getpid(), threading.current_thread().name)), ("after", 4)]


def test_modes_auto_needs_cpu_one_thread_a_second_core_and_enough_evaluations(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cfg = torch.device("cpu"), _cfg(0, "auto")
    assert TrainConfig().eval_background == "auto"
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    many = AUTO_PROCESS_MIN_EVALS
    assert background_eval(cfg, cpu, 1, many) == "process"
    assert background_eval(cfg, cpu, 1, many - 1) == background_eval(cfg, cpu, None, many) == "sync"
    assert background_eval(cfg, torch.device("cuda"), 1, many) == background_eval(_cfg(0, "off"), cpu, 1, many) == "sync"
    assert background_eval(_cfg(0, "process"), torch.device("cuda"), 1) == "sync"
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert background_eval(cfg, cpu, 1, many) == "sync"
    assert background_eval(_cfg(0, "on"), cpu, 1) == background_eval(_cfg(0, "thread"), cpu, 1) == "thread"
    assert background_eval(_cfg(0, "process"), cpu, 1) == "process"


def test_background_solo_run_equals_synchronous(wiki_bench: Path, tmp_path: Path) -> None:
    data = BenchmarkData.from_store(wiki_bench)
    runs = {}
    for mode in MODES:
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
    a, ev_a, seen_a = runs["off"]
    for mode in MODES[1:]:
        b, ev_b, seen_b = runs[mode]
        assert _rows(a.history) == _rows(b.history)  # losses, k-means seeds, every metric, exactly
        assert seen_a == seen_b == [(r["phase"], r["epoch"]) for r in a.history]
        assert ev_a.metrics == ev_b.metrics and ev_a.kmeans_seed == ev_b.kmeans_seed
        assert torch.equal(torch.as_tensor(ev_a.kmeans.cluster_centers_), torch.as_tensor(ev_b.kmeans.cluster_centers_))
        assert isinstance(ev_b.kmeans.labels_, torch.Tensor) and ev_b.kmeans.inertia_ == ev_a.kmeans.inertia_
        for pa, pb in zip(a.net.state_dict().values(), b.net.state_dict().values()):
            assert torch.equal(pa, pb)
    for mode in MODES:
        assert _rows(load_checkpoint(tmp_path / mode / "last.pt")["history"]) == _rows(a.history)


def test_background_stacked_run_equals_synchronous(wiki_bench: Path) -> None:
    data = BenchmarkData.from_store(wiki_bench)
    histories = {}
    for mode in MODES:
        trainers = [FaithfulTrainer(_cfg(s, mode), data) for s in (0, 1)]
        evs = StackedTrainer(trainers).run()
        histories[mode] = ([_rows(t.history) for t in trainers], [ev.metrics for ev in evs])
    assert histories["off"] == histories["thread"] == histories["process"]
    assert all("test_acc" in r for h in histories["process"][0] for r in h if r["phase"] == "joint")


def test_anchor_variant_in_a_worker_process_equals_synchronous(wiki_bench: Path) -> None:
    """dm2c-anchor fits its k-means on the anchor's rows only (ClusterSpec.fit_rows): same in the worker."""
    data = BenchmarkData.from_store(wiki_bench)
    out = {}
    for mode in ("off", "process"):
        t = get_variant("dm2c-anchor").trainer(_cfg(2, mode, variant="dm2c-anchor", epochs=3), data)
        ev = t.run()
        out[mode] = (_rows(t.history), ev.metrics, {s: p.tolist() for s, p in ev.predictions.items()})
    assert out["off"] == out["process"]


def test_sweep_cells_in_parallel_leave_the_cores_to_the_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """With fewer than two cores per parallel cell, a sweep's runs evaluate in their own process."""
    from mixbench.sweep import _eval_with_jobs

    auto = TrainConfig()
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert _eval_with_jobs(auto, 1).eval_background == "auto"
    assert _eval_with_jobs(auto, 2).eval_background == "off"
    assert _eval_with_jobs(auto.replace(eval_background="process"), 2).eval_background == "process"
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert _eval_with_jobs(auto, 2).eval_background == "auto"
