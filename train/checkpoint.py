"""DM2C checkpoints: atomic writes, compatibility checks, and the resume contract.

A checkpoint (``torch.save`` of a plain dict, loadable with ``weights_only=True``) holds the model
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

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mixbench.errors import ConfigError, DataError, StoreError
from mixbench.store.manifest import atomic_write

from .config import NON_TRAINING_FIELDS

if TYPE_CHECKING:
    from .config import TrainConfig

FORMAT = "mixbench-dm2c-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a damaged or foreign file is a clear error."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise StoreError(
            f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); delete it to start the run "
            "again, or rerun with overwrite (CLI: --overwrite)."
        ) from None
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
