"""The stage skeleton (mixbench.stagekit): the output-folder lock, verified reuse, the manifest's own
checksum, and one-line errors (never a traceback) for the file-system failures a user meets."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import prep
from mixbench import stagekit
from mixbench.cli import main
from mixbench.errors import StoreError
from mixbench.store.shards import Store

UNTIL_UNPAIR = ["--until", "unpair"]


def _recipe(tmp_path: Path, repo_root: Path) -> Path:
    """The UCI recipe (small and quick), pointing at the shipped data."""
    text = (repo_root / "data" / "recipes" / "uci-mfeat.toml").read_text()
    text = text.replace('root = "../uci-mfeat"', f'root = "{repo_root / "data" / "uci-mfeat"}"')
    path = tmp_path / "uci.toml"
    path.write_text(text)
    return path


def _hold_lock(folder: Path, stage: str) -> subprocess.Popen[str]:
    """Another process holding ``folder``'s lock until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from mixbench.stagekit import OutputLock
        with OutputLock({str(folder)!r}, {stage!r}):
            print("held", flush=True)
            sys.stdin.read()
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = _hold_lock(out, "train")
    try:
        with pytest.raises(StoreError) as err:
            with stagekit.OutputLock(out, "train"):
                pass
        msg = str(err.value)
        assert f"pid {holder.pid}" in msg and socket.gethostname() in msg and "train" in msg and "since" in msg
        assert "\n" not in msg
    finally:
        holder.communicate("")
    # released with its holder: taken at once, and gone afterwards
    with stagekit.OutputLock(out, "train"):
        assert (out / stagekit.LOCK_FILE).exists()
    assert not (out / stagekit.LOCK_FILE).exists()


def test_stale_lock_after_a_crash_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    holder = _hold_lock(out, "embed")
    holder.kill()  # kill -9: no cleanup, the lock file stays with the dead holder's record
    holder.wait()
    assert json.loads((out / stagekit.LOCK_FILE).read_text())["pid"] == holder.pid
    with stagekit.OutputLock(out, "embed"):
        rec = json.loads((out / stagekit.LOCK_FILE).read_text())
        assert rec["pid"] == os.getpid()
    assert f"pid {holder.pid}" in caplog.text and "stale" in caplog.text


def test_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    with stagekit.OutputLock(tmp_path / "o", "run"):
        with stagekit.OutputLock(tmp_path / "o", "prep"):
            pass
        assert (tmp_path / "o" / stagekit.LOCK_FILE).exists()


def test_a_second_run_into_one_out_refuses_at_once(tmp_path: Path, repo_root: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, repo_root)
    out = tmp_path / "run"
    holder = _hold_lock(out, "run")  # a first run, still going
    try:
        t0 = time.perf_counter()
        assert main(["run", str(recipe), "--out", str(out)]) == 2
        assert time.perf_counter() - t0 < 30
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"pid {holder.pid}" in err and "Traceback" not in err
    finally:
        holder.communicate("")


def _flip(path: Path, at: int = -200) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def test_run_reuse_reverifies_shards(tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, repo_root)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), *UNTIL_UNPAIR]) == 0
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(out), *UNTIL_UNPAIR]) == 0
    assert capsys.readouterr().out.count("reused") == 3
    _flip(out / "embed" / "train-00000.h5")
    assert main(["run", str(recipe), "--out", str(out), *UNTIL_UNPAIR]) == 0
    printed = capsys.readouterr()
    lines = {line.split()[0]: line for line in printed.out.splitlines() if line.strip()}
    assert "reused" in lines["prep"] and "reused" not in lines["embed"]
    assert "train-00000.h5" in printed.err and "not reused" in printed.err  # the log says why
    assert Store(out / "embed").verify() == []  # redone, whole again


def test_hand_edited_manifest_is_refused(tmp_path: Path, repo_root: Path) -> None:
    cfg = {"adapter": "uci-mfeat", "root": str(repo_root / "data" / "uci-mfeat"), "views": ["fou", "kar"]}
    out = tmp_path / "p"
    prep.prepare(cfg, out)
    Store(out)
    path = out / "manifest.json"
    man = json.loads(path.read_text())
    man["classes"][0], man["classes"][1] = man["classes"][1], man["classes"][0]  # valid JSON, wrong content
    path.write_text(json.dumps(man, indent=2))
    with pytest.raises(StoreError, match=r"manifest.json: .*checksum.*edited"):
        Store(out)
    man = json.loads(path.read_text())
    man["classes"][0], man["classes"][1] = man["classes"][1], man["classes"][0]
    man["splits"]["train"]["rows"]["fou"] += 1
    path.write_text(json.dumps(man, indent=2))
    with pytest.raises(StoreError, match="checksum"):
        Store(out)
    # and a stage does not reuse it: the edited store is not taken for a finished run
    assert stagekit.reusable_store(out, "any-key") is None


def test_store_folder_checks_are_one_line(tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, repo_root)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["run", str(recipe), "--out", str(afile), *UNTIL_UNPAIR]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "afile" in err and "not a folder" in err and "--out" in err
    assert main(["prep", "--recipe", str(recipe), "--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, repo_root)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["run", str(recipe), "--out", str(ro / "x"), *UNTIL_UNPAIR]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and "ro" in err and "writable" in err
        assert main(["run", str(recipe), "--out", str(ro), *UNTIL_UNPAIR]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "writable" in err
    finally:
        ro.chmod(0o755)


def test_unwritable_output_folder_any_user(tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check where the tests run as root (who may write anywhere): the folder reports no write access."""
    recipe = _recipe(tmp_path, repo_root)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(stagekit.os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    assert main(["run", str(recipe), "--out", str(ro), *UNTIL_UNPAIR]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not writable" in err and str(ro) in err


def test_full_disk_while_writing_a_shard(tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import h5py

    recipe = _recipe(tmp_path, repo_root)
    real_close = h5py.File.close

    def close(self: h5py.File) -> None:
        real_close(self)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.File, "close", close)
    assert main(["prep", "--recipe", str(recipe), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left" in err.lower() and "free" in err and "Traceback" not in err
    assert not list((tmp_path / "p").glob("*.tmp*"))


def test_empty_npy_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(30, 4)))
    (tmp_path / "b.npy").write_bytes(b"")
    np.save(tmp_path / "y.npy", np.arange(30) % 3)
    args = ["prep", "--adapter", "paired-features", "--set", 'features=["a.npy", "b.npy"]', "--set", 'labels="y.npy"',
            "--out", str(tmp_path / "o")]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(args) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.npy" in err and "empty" in err


def test_inspect_missing_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["inspect", str(tmp_path / "nope"), "--json"], ["inspect", str(tmp_path), "--json"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    from mixbench.store.manifest import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
        assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "g", b"x")
        assert (tmp_path / "g").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_embed_dim_0_is_refused_before_embed(tmp_path: Path, repo_root: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, repo_root)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--set", "embed.dim=0", "--set", "embed.whiten=false"]) == 2
    err = capsys.readouterr().err
    assert "dim = 0" in err and "fou 76, kar 64" in err and "--set embed.dim=64" in err
    assert not (out / "embed").exists() and not (out / "unpair").exists()
