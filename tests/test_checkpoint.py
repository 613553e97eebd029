"""Checkpoints: atomic writes, exact resume (same losses, same final state as an uninterrupted run),
refusal of checkpoints from another config or input dims."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mixbench.errors import ConfigError, DataError, StoreError
from train import DM2C
from train.checkpoint import load_checkpoint, save_checkpoint
from train.data import BenchmarkData
from train.runlog import RunLog, read_jsonl

RUN = {"pretrain_epochs": 3, "epochs": 4, "n_init": 2, "device": "cpu", "checkpoint_every": 2}


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(wiki_bench: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[DM2C, Path]:
    d = tmp_path_factory.mktemp("full")
    return DM2C(**RUN).fit(wiki_bench, checkpoint_dir=d / "checkpoints", runlog=RunLog(d)), d


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _interrupt_at(phase: str, epoch: int):
    def callback(p: str, e: int, row: dict) -> None:
        if (p, e) == (phase, epoch):
            raise Interrupt(f"{p} {e}")

    return callback


@pytest.mark.parametrize("phase,epoch", [("joint", 2), ("pretrain-text", 1), ("joint", 3)])
def test_resume_gives_the_uninterrupted_run(
    wiki_bench: Path, tmp_path: Path, uninterrupted: tuple[DM2C, Path], phase: str, epoch: int
) -> None:
    full, full_dir = uninterrupted
    ckpt = tmp_path / "checkpoints"
    with pytest.raises(Interrupt):
        DM2C(**RUN).fit(wiki_bench, checkpoint_dir=ckpt, runlog=RunLog(tmp_path), callback=_interrupt_at(phase, epoch))
    resumed = DM2C(**RUN).fit(wiki_bench, checkpoint_dir=ckpt, runlog=RunLog(tmp_path))
    assert resumed.resumed_
    # the same losses and metrics, epoch by epoch, and the same log files
    assert _strip(resumed.history_) == _strip(full.history_)
    assert _strip(read_jsonl(tmp_path / "epochs.jsonl")) == _strip(read_jsonl(full_dir / "epochs.jsonl"))
    # the same final state: every parameter and BatchNorm statistic, the optimisers, the k-means result
    a, b = full.model_.state_dict(), resumed.model_.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = full.trainer_.optimizers["generator"].state_dict()["state"]
    sb = resumed.trainer_.optimizers["generator"].state_dict()["state"]
    assert all(torch.equal(sa[i]["square_avg"], sb[i]["square_avg"]) for i in sa)
    assert resumed.metrics_ == full.metrics_
    assert np.array_equal(resumed.predict("test"), full.predict("test"))


def test_finished_checkpoint_resumes_to_the_same_result(wiki_bench: Path, uninterrupted: tuple[DM2C, Path]) -> None:
    full, full_dir = uninterrupted
    again = DM2C(**RUN).fit(wiki_bench, checkpoint_dir=full_dir / "checkpoints")
    assert again.resumed_ and again.metrics_ == full.metrics_
    assert again.evaluation_.kmeans_seed == full.evaluation_.kmeans_seed
    state = load_checkpoint(full_dir / "checkpoints" / "joint.pt")
    assert state["phase"] == "joint" and state["epoch"] == 4 and len(state["history"]) == 3 + 3 + 4
    for name in ("pretrain-image.pt", "pretrain-text.pt", "last.pt"):
        assert (full_dir / "checkpoints" / name).exists()
    assert set(state["rng"]) == {"torch", "numpy"} and state["config"]["epochs"] == 4
    assert state["input"]["dims"] == {"image": 10, "text": 10}


def test_checkpoint_of_another_config_is_refused(wiki_bench: Path, uninterrupted: tuple[DM2C, Path], tmp_path: Path) -> None:
    _, full_dir = uninterrupted
    ckpt = full_dir / "checkpoints"
    with pytest.raises(ConfigError, match=r"fields that differ: epochs: 4 \(checkpoint\) vs 5 \(now\); lr_g: 0\.0001 \(checkpoint\) vs 0\.001"):
        DM2C(**{**RUN, "lr_g": 1e-3, "epochs": 5}).fit(wiki_bench, checkpoint_dir=ckpt)
    with pytest.raises(ConfigError, match="seed"):
        DM2C(**{**RUN, "seed": 1}).fit(wiki_bench, checkpoint_dir=ckpt)
    # fields that do not change the trained state may differ
    DM2C(**{**RUN, "plots": False, "checkpoint_every": 0, "baselines": False}).fit(wiki_bench, checkpoint_dir=ckpt)
    # a model trained on 10-d features cannot take 8-d ones
    data = BenchmarkData.from_store(wiki_bench)
    for s in data.splits.values():
        for m in s.x:
            s.x[m] = s.x[m][:, :8].contiguous()
    data.dims.update({m: 8 for m in data.dims})
    with pytest.raises(DataError, match=r"feature dims \{'image': 10, 'text': 10\}, the input has \{'image': 8, 'text': 8\}"):
        DM2C(**RUN).fit(data, checkpoint_dir=ckpt)
    # another input store (same dims)
    with pytest.raises(DataError, match="another input store"):
        DM2C(**RUN).fit(wiki_bench, checkpoint_dir=ckpt, input_sha256="0" * 64)


def test_atomic_write_and_damaged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    from train.checkpoint import FORMAT, VERSION

    good = {"format": FORMAT, "version": VERSION, "x": torch.arange(3)}
    save_checkpoint(path, good)
    real_save = torch.save

    def crash(obj: Any, f: Any) -> None:
        real_save({"partial": torch.zeros(1000)}, f)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**good, "x": torch.arange(5)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(StoreError, match="cannot read the checkpoint"):
        load_checkpoint(path)
    save_checkpoint(path, {"format": "other"})
    with pytest.raises(StoreError, match="not a mixbench DM2C checkpoint"):
        load_checkpoint(path)


# -- trust: checksums, threads, a full disk (issue 10 §1, §2) ------------------------------------


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one byte inside the weights
    path.write_bytes(bytes(raw))


def test_checkpoint_with_a_flipped_byte_is_refused(wiki_bench: Path, uninterrupted: tuple[DM2C, Path],
                                                   tmp_path: Path) -> None:
    import shutil

    _, full_dir = uninterrupted
    ckpt = tmp_path / "checkpoints"
    shutil.copytree(full_dir / "checkpoints", ckpt)
    _flip_byte(ckpt / "last.pt")
    with pytest.raises(StoreError) as err:
        DM2C(**RUN).fit(wiki_bench, checkpoint_dir=ckpt)
    msg = str(err.value)
    assert str(ckpt / "last.pt") in msg and "sha256" in msg and "delete" in msg and "--overwrite" in msg
    assert "\n" not in msg


def test_checkpoint_resumed_under_other_threads_is_refused(wiki_bench: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    with pytest.raises(Interrupt):
        DM2C(**RUN, threads=1).fit(wiki_bench, checkpoint_dir=ckpt, callback=_interrupt_at("joint", 3))
    with pytest.raises(ConfigError, match=r"threads: 1 \(checkpoint\) vs 2 \(now\)"):
        DM2C(**RUN, threads=2).fit(wiki_bench, checkpoint_dir=ckpt)
    assert DM2C(**RUN, threads=1).fit(wiki_bench, checkpoint_dir=ckpt).resumed_


def test_full_disk_in_a_checkpoint_write_is_one_line(wiki_bench: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from mixbench.cli import main

    def full(obj: Any, f: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    args = ["train", str(wiki_bench), str(tmp_path / "run"), "--pretrain-epochs", "1", "--epochs", "1",
            "--n-init", "2", "--device", "cpu", "--baselines", "false", "--plots", "false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "last.pt" in errors[0] and "no space left" in errors[0].lower()
    assert "Traceback" not in err
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_train_stage_refuses_a_damaged_checkpoint_in_one_line(wiki_bench: Path, uninterrupted: tuple[DM2C, Path],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from mixbench.cli import main

    _, full_dir = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(full_dir / "checkpoints", run / "checkpoints")
    _flip_byte(run / "checkpoints" / "last.pt")
    args = ["train", str(wiki_bench), str(run), "--pretrain-epochs", "3", "--epochs", "4", "--n-init", "2",
            "--checkpoint-every", "2", "--device", "cpu", "--baselines", "false", "--plots", "false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "last.pt" in errors[0] and "sha256" in errors[0] and "Traceback" not in err
