"""DM2C checkpoints: atomic writes, compatibility checks, and the resume contract.

A checkpoint file is one header line, ``MIXBENCH-CHECKPOINT sha256=<64 hex>``, then the bytes of
``torch.save`` of a plain dict (loadable with ``weights_only=True``); the sha256 is that of those
bytes and is checked on every load, so a checkpoint changed by even one byte is refused, naming the
file and the fix (delete it, or rerun with ``--overwrite``). The dict holds the model
(parameters and BatchNorm statistics), the optimisers of the current phase, the RNG states (the
run's torch generator and numpy generator), the phase (``pretrain-<modality>`` or ``joint``) and the
number of epochs done in it, the per-epoch history, the accumulated phase timings, the config and
its hash, the input store's manifest sha256, dims and row counts, and the resolved architecture.

Written to a temp file in the same folder, fsynced, then renamed: a checkpoint file is always
complete. A resumed run continues from the last one and gives exactly the losses and final state of
an uninterrupted run (on the same device). A checkpoint of another config is refused, naming the
fields that differ.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mixbench.errors import ConfigError, DataError, StoreError, WriteError
from mixbench.store.manifest import atomic_write

from .config import NON_TRAINING_FIELDS

if TYPE_CHECKING:
    from .config import TrainConfig

FORMAT = "mixbench-dm2c-checkpoint"
VERSION = 1
#: First bytes of every checkpoint file; the sha256 of the payload follows, then a newline.
MAGIC = b"MIXBENCH-CHECKPOINT sha256="
_HEADER_LEN = len(MAGIC) + 64 + 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename), behind
    a header line with the payload's sha256."""
    buf = io.BytesIO()
    try:
        torch.save(state, buf)
    except OSError as exc:
        raise WriteError.from_os(exc, path) from None
    payload = buf.getvalue()
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n"

    def write(f: Any) -> None:
        f.write(header)
        f.write(payload)

    atomic_write(path, write)


def read_verified(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """Load a file written by :func:`save_checkpoint` after checking its sha256 (any method's checkpoints)."""
    path = Path(path)
    fix = (f"delete it (rm {path}) to start the run again, or rerun with overwrite (CLI: --overwrite)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the checkpoint ({exc.strerror or exc}); {fix}.") from None
    if not raw.startswith(MAGIC) or raw[_HEADER_LEN - 1 : _HEADER_LEN] != b"\n":
        raise StoreError(
            f"{path}: cannot read the checkpoint (no mixbench checksum header: not a mixbench checkpoint, or one "
            f"written by an older version); {fix}."
        )
    recorded = raw[len(MAGIC) : _HEADER_LEN - 1].decode("ascii", "replace")
    payload = memoryview(raw)[_HEADER_LEN:]
    if hashlib.sha256(payload).hexdigest() != recorded:
        raise StoreError(
            f"{path}: the checkpoint does not match its recorded sha256 (damaged or changed after it was "
            f"written); {fix}."
        )
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for foreign payloads
        raise StoreError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); {fix}.") from None


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a DM2C checkpoint written by :func:`save_checkpoint`; a damaged or foreign file is a clear error."""
    path = Path(path)
    state = read_verified(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StoreError(f"{path}: not a mixbench DM2C checkpoint (format {state.get('format') if isinstance(state, dict) else None!r}).")
    if state.get("version") != VERSION:
        raise StoreError(
            f"{path}: checkpoint version {state.get('version')} is not supported (this mixbench writes version "
            f"{VERSION}); rerun with overwrite to start again."
        )
    return state


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``field: saved → current`` for every training field that differs (order of ``current``)."""
    out = []
    for key in [*current, *(k for k in saved if k not in current)]:
        if key in NON_TRAINING_FIELDS:
            continue
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: {a!r} (checkpoint) vs {b!r} (now)")
    return out


def check_compatible(
    state: dict[str, Any],
    cfg: TrainConfig,
    *,
    dims: dict[str, int],
    input_sha256: str | None,
    variant: str,
    path: Path,
) -> None:
    """Refuse a checkpoint that another config, variant or input wrote (the message lists why)."""
    fix = f"rerun with overwrite (CLI: --overwrite) to start afresh, or use another output folder than {path.parent.parent}"
    if state.get("variant") != variant:
        raise ConfigError(f"{path}: checkpoint of DM2C variant {state.get('variant')!r}, this run is {variant!r}; {fix}.")
    diffs = config_differences(state.get("config", {}), cfg.to_dict())
    if diffs:
        raise ConfigError(
            f"{path}: checkpoint written with another [train] config; fields that differ: {'; '.join(diffs)}. "
            f"Restore those values to resume, or {fix}."
        )
    saved = state.get("input", {})
    if dict(saved.get("dims", {})) != dict(dims):
        raise DataError(
            f"{path}: checkpoint trained on feature dims {saved.get('dims')}, the input has {dims}; the model "
            f"cannot take these features. Use the store the checkpoint was trained on, or {fix}."
        )
    if input_sha256 and saved.get("manifest_sha256") and saved["manifest_sha256"] != input_sha256:
        raise DataError(
            f"{path}: checkpoint trained on another input store (manifest sha256 {str(saved['manifest_sha256'])[:16]}…, "
            f"input now {input_sha256[:16]}…); {fix}."
        )
