"""Manifest helpers: checksums, atomic writes, lineage entries and package versions."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mixbench import __version__
from mixbench.config import hash_json

SCHEMA = "mixbench-store"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

_TRACKED_PACKAGES = ("numpy", "scipy", "scikit-learn", "h5py", "torch", "open-clip-torch", "timm", "faiss-cpu")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(f)`` on a temp file in ``path``'s folder, fsync, then rename it to ``path``:
    readers see the old file or the complete new one, never a partial one. The file gets the mode a
    plain ``open`` would give (0666 less the umask), not the temp file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        from mixbench.errors import WriteError

        raise WriteError.from_os(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


#: The manifest's own checksum: sha256 of the canonical JSON of the manifest without this key.
MANIFEST_CHECKSUM = "manifest_sha256"


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` (as it reads back from JSON) with its own checksum added under MANIFEST_CHECKSUM."""
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM}, default=str))
    return {**body, MANIFEST_CHECKSUM: hash_json(body)}


def seal_ok(manifest: dict[str, Any]) -> bool | None:
    """True when ``manifest`` matches its own checksum, False when it does not, None when it has none."""
    recorded = manifest.get(MANIFEST_CHECKSUM)
    if recorded is None:
        return None
    return hash_json({k: v for k, v in manifest.items() if k != MANIFEST_CHECKSUM}) == recorded


def versions() -> dict[str, str]:
    """Versions of Python, mixbench and the numeric packages present (recorded in lineage)."""
    out = {"python": platform.python_version(), "mixbench": __version__}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def lineage_entry(
    stage: str,
    config: dict[str, Any],
    inputs: dict[str, Any],
    *,
    seed: int | None = None,
    started: str | None = None,
) -> dict[str, Any]:
    """One stage's lineage record: name, full config, its hash, versions, input checksums, seed, time.

    ``inputs`` maps an input name to its checksum record, e.g. ``{"store": {"path": ...,
    "manifest_sha256": ...}}`` or ``{"raw_features.mat": {"sha256": ...}}``.
    """
    return {
        "stage": stage,
        "config": config,
        "config_hash": hash_json(config),
        "inputs": inputs,
        "inputs_hash": hash_json(inputs_key(inputs)),
        "seed": seed,
        "mixbench_version": __version__,
        "versions": versions(),
        "started": started or now(),
        "finished": None,
    }


def inputs_key(inputs: dict[str, Any]) -> dict[str, Any]:
    """The part of an inputs record that identifies content (checksums, not paths or times)."""
    out: dict[str, Any] = {}
    for name, rec in sorted(inputs.items()):
        if isinstance(rec, dict):
            out[name] = {k: v for k, v in sorted(rec.items()) if "sha256" in k or k in ("size", "rows")}
        else:
            out[name] = rec
    return out


def run_key(stage: str, config: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Identifies one stage run (config + input content): finished shards are reused only
    when a resumed run has the same key."""
    return hash_json({"stage": stage, "config": config, "inputs": inputs_key(inputs)})
