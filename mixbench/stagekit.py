"""The stage skeleton's shared pieces, used by the four stages and by ``mixbench run``.

Every stage runs the same skeleton: config → input store → run key → **lock** → **verified reuse**
→ lineage → writer → finish. This module holds the parts that must exist once:

- :class:`OutputLock`: one writer per output folder. A second ``mixbench run`` (or stage) into a
  folder in use refuses at once, naming the holder (pid, host, start time).
- :func:`reusable_store`: a finished stage is reused only when its run key matches **and** its
  manifest's own checksum and every file it lists still hash to the recorded sha256.
- :func:`check_output_dir`: ``--out`` that is a file, or a folder that cannot be written, is a
  one-line error before any work.
- :func:`os_error_message`: the one-line message (with the fix) for an ``OSError`` met while
  writing (full disk, permission denied, read-only file system), used by the CLI.

Why ``fcntl.flock`` for the lock (and not an ``O_CREAT|O_EXCL`` pid file): the kernel releases a
flock when its holder dies, however it dies (``kill -9``, OOM, power loss on a local disk), so a
stale lock cannot block anyone and taking it over needs no guess about whether a pid is alive or
was reused; a pid file needs exactly that guess, and only works on the host that wrote it. The
lock file (``.mixbench.lock``) holds the holder's pid, host and start time for the message; a file
left by a crashed holder is found unlocked, reported as stale and taken over. On release the file
is removed; a waiter that locked a file just removed notices (its inode is no longer the path's)
and locks the new one, so two holders can never both believe they hold the folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, StoreError, os_error_message  # noqa: F401 - os_error_message: part of the kit
from .store.manifest import MANIFEST, now, sha256_file
from .store.shards import read_manifest, reusable

log = logging.getLogger(__name__)

LOCK_FILE = ".mixbench.lock"

_held: dict[Path, tuple[int, int]] = {}  # resolved folder → (fd, depth): re-entrant within a process
_held_guard = threading.Lock()


# ---------------------------------------------------------------------------------------------
# output folder
# ---------------------------------------------------------------------------------------------


def check_output_dir(folder: str | os.PathLike[str], what: str = "--out") -> Path:
    """Create ``folder`` (and its parents) and check that it can be written; one-line errors."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder}: is a file, not a folder; choose a folder path for {what}.")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{what} {folder}: {parent} is a file, not a folder; choose a folder path for {what}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{what} {folder}: cannot create the folder ({exc.strerror or exc}); choose a writable "
                         f"location for {what} or make its parent writable.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"{what} {folder}: the folder is not writable; make it writable (chmod u+w) or choose "
                         f"another {what}.")
    return folder


# ---------------------------------------------------------------------------------------------
# the lock
# ---------------------------------------------------------------------------------------------


class OutputLock:
    """Exclusive use of an output folder by one process (re-entrant within it).

    >>> with OutputLock("out/wikipedia/train", "train"):   # doctest: +SKIP
    ...     ...                                             # write the folder
    """

    def __init__(self, folder: str | os.PathLike[str], stage: str) -> None:
        self.folder = Path(folder)
        self.stage = stage
        self._key: Path | None = None
        self._created = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self._created = not self.folder.exists()
        check_output_dir(self.folder)
        key = self.folder.resolve()
        with _held_guard:
            if key in _held:
                fd, depth = _held[key]
                _held[key] = (fd, depth + 1)
                self._key = key
                return
            fd = _lock_file(self.folder / LOCK_FILE, self.stage)
            _held[key] = (fd, 1)
            self._key = key

    def release(self) -> None:
        if self._key is None:
            return
        with _held_guard:
            fd, depth = _held[self._key]
            if depth > 1:
                _held[self._key] = (fd, depth - 1)
            else:
                del _held[self._key]
                # remove while still holding: a waiter that locked this inode retries on the new path
                (self.folder / LOCK_FILE).unlink(missing_ok=True)
                os.close(fd)
                if self._created:  # a folder made only for the lock (the stage failed early) goes again
                    try:
                        self.folder.rmdir()
                    except OSError:
                        pass
        self._key = None


def _lock_file(path: Path, stage: str) -> int:
    """Lock ``path`` (created if absent) with flock; write the holder record; return the fd."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the lock file ({exc.strerror or exc}); make {path.parent} "
                             "writable or choose another --out.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreError(
                f"{path.parent} is in use by another mixbench process ({_describe(holder)}); wait for it to "
                "finish (or stop it), or choose another --out."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file after we opened it: lock the new one
            os.close(fd)
            continue
        stale = _read_holder(fd)
        if stale:
            log.warning("%s: taking over a stale lock of %s (it ended without releasing the folder: a crash or a "
                        "kill); unfinished work there is checked before it is reused", path.parent, _describe(stale))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage, "started": now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return fd
    raise StoreError(f"{path}: could not take the lock (it kept changing hands); retry.")


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        rec = json.loads(raw) if raw.strip() else {}
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    return (f"mixbench {holder.get('stage', '?')}, pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"since {holder.get('started', '?')}")


# ---------------------------------------------------------------------------------------------
# verified reuse
# ---------------------------------------------------------------------------------------------


def reusable_store(path: str | os.PathLike[str], key: str, stage: str = "stage") -> dict[str, Any] | None:
    """The manifest of a finished store at ``path`` with run key ``key`` that still verifies, else None.

    Checked: the manifest's own checksum (a hand-edited manifest is not reused), then the sha256 of
    every shard and auxiliary file it lists (a damaged file is not reused). The cost is one read of
    the stage's output (README, "Trust"). A store that fails is logged and not reused; the caller
    then redoes the stage (``mixbench run``) or asks for ``--overwrite``."""
    path = Path(path)
    manifest = reusable(path, key)
    if manifest is None:
        return None
    t0 = time.perf_counter()
    problems = verify_files(path, manifest)
    if problems:
        log.warning("%s: %s output not reused: %s", path, stage, problems[0])
        return None
    n = len(manifest.get("shards", [])) + len(manifest.get("files", []))
    size = sum(int(r.get("bytes", 0)) for r in manifest.get("shards", [])) + sum(
        int(r.get("bytes", 0)) for r in manifest.get("files", []))
    log.info("%s: verified %d file(s), %.1f MB, in %.2f s before reuse", path, n, size / 1e6, time.perf_counter() - t0)
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the files a manifest lists (missing, or sha256 differs); empty when all match."""
    problems = []
    for rec in [*manifest.get("shards", []), *manifest.get("files", [])]:
        f = path / rec["file"]
        if not f.is_file():
            problems.append(f"{f}: listed in the manifest but missing")
        elif sha256_file(f) != rec["sha256"]:
            problems.append(f"{f}: sha256 does not match the manifest (changed or damaged after it was written)")
    return problems


def manifest_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the manifest at ``path`` cannot be trusted (None: it verifies)."""
    try:
        read_manifest(Path(path) / MANIFEST)
    except StoreError as exc:
        return str(exc)
    return None
