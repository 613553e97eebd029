"""The encode step of the embed stage: raw paired store → features store.

``encode_store`` encodes every modality of a raw store that has an encoder (images through the
decode pipeline of :mod:`embed.images`, texts and tag vectors in the main process) and copies
finished ``feat`` columns through. It writes one output shard per input shard (same split and
index) through :class:`mixbench.store.shards.StoreWriter`, so a killed run restarted with the same run key
keeps its finished shards and ends with the same store as an uninterrupted run.

Accounting: every input row is either embedded or rejected (missing/zero-byte/truncated/
undecodable/too-large image, empty text); the other half of a rejected pair is rejected too
(``"partner-rejected: <reason>"``). Per shard, the rejects and counts are saved next to the
shard (``.encode/<shard>.json``, written before the shard) so a resumed run still reports them.
If more than ``max_reject_fraction`` of a split's input rows are rejected, the stage fails with the
counts and the path of the report (``rejects.json``) and writes no manifest.

Under ``torchrun`` each rank takes shards ``rank, rank+W, ...``; rank 0 waits for all, then
writes the manifest. Shards are byte-identical to a single-process run on CPU.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mixbench import dist
from mixbench.config import hash_json
from mixbench.device import resolve_device
from mixbench.errors import ConfigError, DataError, StoreError
from mixbench.store.manifest import atomic_write_json
from mixbench.store.shards import FEAT_DTYPES, Column, Store, StoreWriter, shard_name, split_sort_key

from .encoders import Encoder, ImageEncoder, ModelCache, ValueEncoder, create_encoder, make_encoder_config
from .encoders.base import AdaptiveBatch
from .encoders.features import Passthrough
from .images import (
    ABSENT,
    DecodePlan,
    ImageReject,
    ImageSource,
    ImageTask,
    ImageTaskDataset,
    Preprocess,
    RawBatch,
    decode_cpu,
    decode_jpegs_on_device,
    identity_collate,
    index_tensor,
    resize_many,
)

log = logging.getLogger(__name__)

EMPTY_TEXT = "empty-text"
EMPTY_TAGS = "empty-tags"
PARTNER = "partner-rejected"
SIDECAR_DIR = ".encode"
REPORT = "rejects.json"
MAX_ITEMS_IN_MANIFEST = 10_000


@dataclass
class ModalityPlan:
    """How one modality is turned into ``feat``."""

    modality: str
    kind: str  # image | text | feat
    column: str  # path | pixels | text | feat
    encoder: Encoder
    where: str
    passthrough: bool = False


@dataclass
class ShardOutcome:
    """One input shard after encoding: output tables and its accounting."""

    tables: dict[str, dict[str, Any]]
    accounting: dict[str, dict[str, int]]
    rejects: list[dict[str, Any]]
    stats: dict[str, int] = field(default_factory=dict)


# -- planning -----------------------------------------------------------------------------------
def _columns_for(src: Store, m: str, inputs: tuple[str, ...]) -> tuple[str, str] | None:
    cols = src.schema[m]
    candidates = {"image": ("path", "pixels"), "text": ("text",), "feat": ("feat",)}
    for kind in inputs:
        for col in candidates[kind]:
            if col in cols:
                return kind, col
    return None


def _describe_columns(src: Store, m: str) -> str:
    return ", ".join(src.schema[m])


def plan_modalities(
    src: Store,
    encoders: Mapping[str, Any],
    *,
    device: torch.device,
    base_dir: Path,
    cache: ModelCache | None = None,
) -> dict[str, ModalityPlan]:
    """Check the encoder tables against ``src`` and create the encoders (weights are loaded and
    checked here, before anything is written)."""
    unknown = [m for m in encoders if m not in src.modalities]
    if unknown:
        raise ConfigError(f"[embed.encoders]: modality {unknown[0]!r} is not in the input store {src.path} "
                          f"(modalities: {', '.join(src.modalities)}).")
    plans: dict[str, ModalityPlan] = {}
    cache = cache or ModelCache()
    for m in src.modalities:
        where = f"[embed.encoders.{m}]"
        table = encoders.get(m)
        if table is None:
            if not src.has_column(m, "feat"):
                raise ConfigError(
                    f"{where}: modality {m!r} of {src.path} has no 'feat' column (columns: {_describe_columns(src, m)}), "
                    "so it needs an encoder, e.g. encoder = \"open_clip\" for images or \"tfidf\" for text."
                )
            enc: Encoder = Passthrough()
            plans[m] = ModalityPlan(m, "feat", "feat", enc, where, passthrough=True)
        else:
            cfg = make_encoder_config(table, where)
            found = _columns_for(src, m, cfg.inputs)
            if found is None:
                from .encoders import list_encoders
                from .encoders import encoder_inputs

                fitting = [n for n in list_encoders() if _columns_for(src, m, encoder_inputs(n))]
                raise ConfigError(
                    f"{where} encoder = {cfg.encoder!r} reads {' or '.join(cfg.inputs)}, but modality {m!r} of "
                    f"{src.path} has columns {_describe_columns(src, m)}. Encoders that fit: {', '.join(fitting) or 'none'}."
                )
            kind, column = found
            enc = create_encoder(cfg, device, input_kind=kind, base_dir=base_dir, cache=cache, where=where)
            plans[m] = ModalityPlan(m, kind, column, enc, where, passthrough=cfg.encoder == "features")
        plan = plans[m]
        if plan.column == "feat" and hasattr(plan.encoder, "set_input_dim"):
            col = src.schema[m]["feat"]
            if len(col.shape) != 1:
                raise StoreError(f"{src.path} [{m}.feat]: expected N×D features, schema shape {list(col.shape)}.")
            if isinstance(plan.encoder, Passthrough):
                plan.encoder.set_input_dim(col.shape[0], col.dtype)
            elif not plan.encoder.needs_fit:
                plan.encoder.set_input_dim(col.shape[0])  # type: ignore[attr-defined]
        if plan.column == "pixels":
            col = src.schema[m]["pixels"]
            if col.dtype != "uint8" or len(col.shape) != 3 or col.shape[2] != 3:
                raise StoreError(f"{src.path} [{m}.pixels]: expected uint8 H×W×3 RGB, schema says "
                                 f"{col.dtype} {list(col.shape)}; fix the prep adapter.")
    return plans


def _image_root(src: Store, base_dir: Path) -> Path:
    root = src.info.get("image_root")
    if root is None:
        raise StoreError(f"{src.path}/manifest.json: info.image_root is missing, but a modality has a 'path' column "
                         "relative to it; rebuild the raw store with its prep adapter.")
    p = Path(str(root)).expanduser()
    return p if p.is_absolute() else (base_dir / p)


# -- fitting (train split only) ------------------------------------------------------------------
def _fit(plans: Mapping[str, ModalityPlan], src: Store, d: dist.DistInfo) -> None:
    """Fit the encoders that need it (TF-IDF) on the train split: rank 0 fits, every rank gets
    the fitted state."""
    for m, plan in plans.items():
        enc = plan.encoder
        if not enc.needs_fit:
            continue
        if "train" not in src.splits:
            raise ConfigError(f"{plan.where} encoder {enc.cfg.encoder!r} is fitted on the train split, but "  # type: ignore[attr-defined]
                              f"{src.path} has none (splits: {', '.join(src.splits)}).")

        def fit_here(m: str = m, plan: ModalityPlan = plan, enc: Encoder = enc) -> Any:
            enc.fit(_train_values(src, m, plan))
            return enc.fitted_state()

        state = dist.on_main(fit_here)
        if not d.is_main:
            enc.load_fitted_state(state)


def _train_values(src: Store, m: str, plan: ModalityPlan) -> Iterator[Any]:
    cols = [plan.column] + (["present"] if src.has_column(m, "present") else [])
    for _, tables in src.iter_shards("train", [m], cols):
        t = tables[m]
        vals = t[plan.column]
        keep = _usable(vals, plan) & (t["present"].astype(bool) if "present" in t else True)
        yield [vals[i] for i in np.flatnonzero(keep)] if plan.column == "text" else vals[keep]


def _usable(values: np.ndarray, plan: ModalityPlan) -> np.ndarray:
    """Rows the encoder can use (non-empty text; tag vectors with at least one tag)."""
    if plan.column == "text":
        return np.array([bool(str(v).strip()) for v in values], dtype=bool)
    if plan.column == "feat" and not plan.passthrough:
        return np.asarray(values).reshape(len(values), -1).max(axis=1, initial=0) > 0
    return np.ones(len(values), dtype=bool)


# -- sidecars (per-shard rejects and counts) ------------------------------------------------------
def _sidecar(out: Path, split: str, index: int) -> Path:
    return out / SIDECAR_DIR / f"{shard_name(split, index)}.json"


def _read_sidecar(path: Path, run_key: str, fingerprint: str | None = None) -> dict[str, Any] | None:
    """The sidecar of a finished shard written by this run key (and, when given, by encoders
    with this fingerprint), else None."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("run_key") != run_key:
        return None
    if fingerprint is not None and rec.get("encoders_sha256") != fingerprint:
        log.warning("%s was encoded with other encoder weights or settings (e.g. a replaced weights file or "
                    "another precision); encoding that shard again", path.name[: -len(".json")])
        return None
    return rec


def encoders_fingerprint(plans: Mapping[str, ModalityPlan]) -> str:
    """sha256 of what the encoders record (weights sha256, preprocessing, precision, fitted
    vocabulary...): a resumed run redoes shards written with anything else, even under the
    same run key (e.g. a weights file replaced in place)."""
    return hash_json({m: p.encoder.describe() for m, p in plans.items()})


def _clean_sidecars(out: Path, writer: StoreWriter, run_key: str) -> None:
    folder = out / SIDECAR_DIR
    if not folder.is_dir():
        return
    for p in folder.glob("*.h5.json"):
        rec = _read_sidecar(p, run_key)
        if rec is None or not writer.shard_done(rec["split"], rec["index"]):
            p.unlink(missing_ok=True)


# -- image pipeline --------------------------------------------------------------------------------
@dataclass
class _ImageRun:
    loader: Iterator[RawBatch]
    tasks_per: dict[tuple[int, str], int]
    plans: dict[str, DecodePlan]
    decode_batchers: dict[str, AdaptiveBatch]


def _image_run(todo: list[dict[str, Any]], plans: Mapping[str, ModalityPlan], src: Store, base_dir: Path,
               device: torch.device) -> _ImageRun | None:
    image_mods = [m for m, p in plans.items() if p.kind == "image"]
    if not image_mods or not todo:
        return None
    decode: dict[str, DecodePlan] = {}
    for m in image_mods:
        enc = plans[m].encoder
        assert isinstance(enc, ImageEncoder)
        decode[m] = DecodePlan(enc.preprocess, enc.device_decode, enc.options.max_pixels, enc.options.exif_orientation)
    root = str(_image_root(src, base_dir)) if any(plans[m].column == "path" for m in image_mods) else ""
    sources: list[ImageSource] = []
    tasks: list[ImageTask] = []
    per: dict[tuple[int, str], int] = {}
    for j, rec in enumerate(todo):
        for m in image_mods:
            enc = plans[m].encoder
            assert isinstance(enc, ImageEncoder)
            sources.append(ImageSource(str(src.path / rec["file"]), m, plans[m].column,
                                       src.has_column(m, "present"), root))
            n = int(rec["rows"][m])
            bs = enc.options.batch_size
            starts = range(0, n, bs)
            for a in starts:
                tasks.append(ImageTask(len(sources) - 1, a, min(n, a + bs)))
            per[(j, m)] = len(starts)
    workers = max(plans[m].encoder.options.workers for m in image_mods)  # type: ignore[attr-defined]
    import torchvision.transforms.v2.functional  # noqa: F401  (imported once here, not in every forked worker)
    ds = ImageTaskDataset(sources, decode, tasks)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, shuffle=False, num_workers=workers, collate_fn=identity_collate,
        pin_memory=device.type == "cuda", prefetch_factor=2 if workers > 0 else None,
    )
    batchers = {m: AdaptiveBatch(plans[m].encoder.options.batch_size, f"decode_jpeg + resize on {device}")  # type: ignore[attr-defined]
                for m in image_mods}
    return _ImageRun(iter(loader), per, decode, batchers)


def _resize(imgs: list[torch.Tensor], pre: Preprocess, batcher: AdaptiveBatch) -> torch.Tensor:
    """``resize_many`` in chunks that halve on CUDA out-of-memory (full-size images in float are
    several times their uint8 size; a worker batch of large photos may not fit at once)."""
    return torch.cat(batcher.run(lambda a, b: resize_many(imgs[a:b], pre), len(imgs)))


def _embed_batch(batch: RawBatch, enc: ImageEncoder, plan: DecodePlan, batcher: AdaptiveBatch) -> tuple[torch.Tensor, list[int], int]:
    """Decode (device JPEGs), resize and embed one worker batch; returns (features, rows, reduced).

    Rows whose device decode fails are retried with PIL; if that fails too they become rejects
    (``batch.status`` is updated in place)."""
    dev = enc.device
    pre = plan.preprocess
    reduced = batch.reduced
    parts: list[tuple[list[int], torch.Tensor]] = []
    if batch.jpeg_rows:
        jpegs = batch.jpegs()
        decoded: list[torch.Tensor | None] = []
        for chunk in batcher.run(lambda a, b: decode_jpegs_on_device(jpegs[a:b], dev), len(jpegs)):
            decoded.extend(chunk)
        imgs: list[torch.Tensor] = []
        rows: list[int] = []
        for row, img, raw in zip(batch.jpeg_rows, decoded, jpegs):
            if img is None:
                try:
                    cpu_img, red = decode_cpu(raw.numpy().tobytes(), plan.max_pixels, plan.exif_orientation)
                    reduced += int(red)
                    img = cpu_img.to(dev)
                except ImageReject as rej:
                    batch.status[row] = rej.reason
                    continue
            imgs.append(img)
            rows.append(row)
        if imgs:
            parts.append((rows, _resize(imgs, pre, batcher)))
    if batch.decoded:
        imgs = [t.to(dev, non_blocking=True) for t in batch.decoded]
        parts.append((list(batch.decoded_rows), _resize(imgs, pre, batcher)))
    if batch.ready is not None:
        parts.append((list(batch.ready_rows), batch.ready.to(dev, non_blocking=True)))
    if not parts:
        return torch.empty((0, enc.dim), device=dev), [], reduced
    rows_all = [r for rows_, _ in parts for r in rows_]
    x = torch.cat([t for _, t in parts]) if len(parts) > 1 else parts[0][1]
    order = sorted(range(len(rows_all)), key=rows_all.__getitem__)
    if order != list(range(len(order))):  # back to row order: the batch is the same on every path
        x = x[index_tensor(order, x.device)]
        rows_all = [rows_all[i] for i in order]
    return enc.embed(x), rows_all, reduced


def _encode_images(run: _ImageRun, j: int, m: str, plan: ModalityPlan, n: int) -> tuple[np.ndarray, list[str | None], list[str], int]:
    enc = plan.encoder
    assert isinstance(enc, ImageEncoder)
    status: list[str | None] = [None] * n
    files: list[str] = [""] * n
    feats: list[torch.Tensor] = []
    rows: list[int] = []
    reduced = 0
    for _ in range(run.tasks_per[(j, m)]):
        batch = next(run.loader)
        f, r, red = _embed_batch(batch, enc, run.plans[m], run.decode_batchers[m])
        reduced += red
        status[batch.start : batch.stop] = batch.status
        files[batch.start : batch.stop] = batch.files
        feats.append(f)
        rows.extend(batch.start + i for i in r)
    out = np.zeros((n, enc.dim), dtype=np.float32)
    if rows:
        out[np.asarray(rows)] = torch.cat(feats).float().cpu().numpy()
    return out, status, files, reduced


# -- one shard -------------------------------------------------------------------------------------
def _encode_values(plan: ModalityPlan, values: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    enc = plan.encoder
    assert isinstance(enc, ValueEncoder)
    n = len(values)
    status: list[str | None] = [None if p else ABSENT for p in present]
    if plan.passthrough:
        return np.asarray(values, dtype=np.float32).reshape(n, -1), status
    usable = _usable(values, plan)
    reason = EMPTY_TEXT if plan.column == "text" else EMPTY_TAGS
    for i in range(n):
        if status[i] is None and not usable[i]:
            status[i] = reason
    ok = [i for i in range(n) if status[i] is None]
    out = np.zeros((n, enc.dim), dtype=np.float32)
    if ok:
        sel = [values[i] for i in ok] if plan.column == "text" else np.asarray(values)[ok]
        out[np.asarray(ok)] = enc.encode(sel)
    return out, status


def _encode_shard(rec: dict[str, Any], j: int, src: Store, plans: Mapping[str, ModalityPlan],
                  run: _ImageRun | None, dtype: str) -> ShardOutcome:
    split = rec["split"]
    meta: dict[str, dict[str, np.ndarray]] = {}
    feats: dict[str, np.ndarray] = {}
    status: dict[str, list[str | None]] = {}
    files: dict[str, list[str]] = {}
    reduced = 0
    for m, plan in plans.items():
        cols = ["id", "label", "pair"] + (["present"] if src.has_column(m, "present") else [])
        if plan.kind != "image":
            cols.append(plan.column)
        meta[m] = src.read_shard(rec, [m], cols)[m]
        n = len(meta[m]["id"])
        present = meta[m]["present"].astype(bool) if "present" in meta[m] else np.ones(n, dtype=bool)
        if plan.kind == "image":
            assert run is not None
            feats[m], status[m], files[m], red = _encode_images(run, j, m, plan, n)
            reduced += red
            if plan.column == "pixels":
                files[m] = [rec["file"]] * n
        else:
            feats[m], status[m] = _encode_values(plan, meta[m][plan.column], present)
            files[m] = [rec["file"]] * n
    # The other half of a rejected pair goes too.
    first: dict[int, tuple[str, str]] = {}
    for m in plans:
        for i, s in enumerate(status[m]):
            p = int(meta[m]["pair"][i])
            if s is not None and s != ABSENT and p >= 0 and p not in first:
                first[p] = (m, s)
    for m in plans:
        for i, s in enumerate(status[m]):
            p = int(meta[m]["pair"][i])
            if (s is None or s == ABSENT) and p in first and first[p][0] != m:
                status[m][i] = f"{PARTNER}: {first[p][1]}"
    tables: dict[str, dict[str, Any]] = {}
    accounting: dict[str, dict[str, int]] = {}
    rejects: list[dict[str, Any]] = []
    for m in plans:
        st = status[m]
        keep = np.array([s is None or s == ABSENT for s in st], dtype=bool)
        idx = np.flatnonzero(keep)
        t = {c: meta[m][c][idx] for c in ("id", "label", "pair")}
        if "present" in meta[m]:
            t["present"] = meta[m]["present"][idx]
        t["feat"] = feats[m][idx].astype(dtype)
        _check_finite(t, plans[m], rec, dtype)
        tables[m] = t
        n = len(st)
        accounting[m] = {"input": n, "kept": int(keep.sum()), "rejected": int(n - keep.sum())}
        for i in np.flatnonzero(~keep):
            rejects.append({"split": split, "modality": m, "id": str(meta[m]["id"][i]),
                            "pair": int(meta[m]["pair"][i]), "file": files[m][i], "reason": st[i]})
    return ShardOutcome(tables, accounting, rejects, {"reduced_while_decoding": reduced})


def _check_finite(table: Mapping[str, np.ndarray], plan: ModalityPlan, rec: Mapping[str, Any], dtype: str) -> None:
    """Refuse a shard whose kept rows got NaN/inf features: a model or precision problem, not a bad
    input row (those are rejected before encoding), so the whole run stops with the fix."""
    bad = ~np.isfinite(table["feat"]).all(axis=1)
    if not bad.any():
        return
    ids = [str(i) for i in table["id"][bad][:5]]
    if plan.passthrough:
        fix = "the input store's 'feat' column holds NaN/inf: fix the features at prep"
    else:
        fix = (f"under fp16 this is usually overflow: set [embed.encoders.{plan.modality}] precision = 'fp32' "
               "(or 'bf16')" + (" and [embed] dtype = 'float32'" if dtype == "float16" else "")
               + "; otherwise check the encoder's weights")
    raise DataError(
        f"{plan.where}: the encoder gave non-finite features for {int(bad.sum())} row(s) of split '{rec['split']}' "
        f"shard {rec['file']} (ids {', '.join(ids)}{', ...' if bad.sum() > 5 else ''}); {fix}."
    )


# -- finishing ---------------------------------------------------------------------------------------
def _summarise(sidecars: list[dict[str, Any]], modalities: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    accounting: dict[str, dict[str, dict[str, int]]] = {}
    items: list[dict[str, Any]] = []
    stats: dict[str, int] = {}
    for sc in sidecars:
        acc = accounting.setdefault(sc["split"], {m: {"input": 0, "kept": 0, "rejected": 0} for m in modalities})
        for m, a in sc["accounting"].items():
            for k in ("input", "kept", "rejected"):
                acc[m][k] += int(a[k])
        items.extend(sc["rejects"])
        for k, v in sc.get("stats", {}).items():
            stats[k] = stats.get(k, 0) + int(v)
    by_reason: dict[str, int] = {}
    for it in items:
        by_reason[it["reason"]] = by_reason.get(it["reason"], 0) + 1
    accounting = {s: accounting[s] for s in sorted(accounting, key=split_sort_key)}
    rejects = {"count": len(items), "by_reason": dict(sorted(by_reason.items())), "items": items}
    return rejects, accounting, stats


def _output_schema(src: Store, plans: Mapping[str, ModalityPlan], dtype: str) -> dict[str, dict[str, Column]]:
    schema: dict[str, dict[str, Column]] = {}
    for m, plan in plans.items():
        cols = {c: src.schema[m][c] for c in ("id", "label", "pair")}
        if src.has_column(m, "present"):
            cols["present"] = src.schema[m]["present"]
        cols["feat"] = Column(dtype, (int(plan.encoder.dim),))
        schema[m] = cols
    return schema


def _rank_device(device: torch.device, d: dist.DistInfo) -> torch.device:
    if device.type == "cuda" and device.index is None and d.enabled:
        return torch.device("cuda", dist.cuda_index(d.local_rank))
    return device


def encode_store(
    src: Store,
    out: str | os.PathLike[str],
    encoders: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] = ".",
    device: torch.device | str = "auto",
    lineage: list[dict[str, Any]],
    run_key: str,
    max_reject_fraction: float = 0.0,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Store:
    """Encode ``src`` (a raw paired store) into a complete features store at ``out``.

    ``encoders`` maps a modality to its encoder table (``{"encoder": "open_clip", ...}``) or an
    :class:`~embed.encoders.EncoderConfig`; a modality without one must already have ``feat``.
    ``lineage`` is the lineage of the output (the input's plus the embed entry); ``run_key``
    identifies this run for resuming. Returns ``Store(out)``.
    """
    t_start = time.perf_counter()
    if dtype not in FEAT_DTYPES:
        raise ConfigError(f"[embed] dtype = {dtype!r}: must be one of {', '.join(FEAT_DTYPES)}.")
    if not 0.0 <= float(max_reject_fraction) <= 1.0:
        raise ConfigError(f"[embed] max_reject_fraction = {max_reject_fraction!r}: must be a number in [0, 1].")
    d = dist.init()
    out = Path(out)
    base = Path(base_dir)
    dev = _rank_device(resolve_device(device), d)
    plans = plan_modalities(src, encoders, device=dev, base_dir=base)
    _fit(plans, src, d)
    schema = _output_schema(src, plans, dtype)

    def make_writer() -> StoreWriter:
        return StoreWriter(out, kind="features", dataset=src.dataset, classes=src.classes, schema=schema,
                           lineage=lineage, run_key=run_key, multilabel=src.multilabel, overwrite=overwrite,
                           rank=d.rank)

    def open_main() -> StoreWriter:  # rank 0 first: it clears a replaced store and stale shards
        w = make_writer()
        _clean_sidecars(out, w, run_key)
        return w

    if d.is_main:
        writer = dist.on_main(open_main, share=False)
        assert writer is not None
    else:
        dist.on_main(open_main, share=False)  # wait for rank 0 (its error is raised here too)
        writer = make_writer()

    records = sorted(src.manifest["shards"], key=lambda r: (split_sort_key(r["split"]), r["index"]))
    mine = dist.my_items(records, d)
    fingerprint = encoders_fingerprint(plans)
    todo = [r for r in mine if not (writer.shard_done(r["split"], r["index"]) and
                                    _read_sidecar(_sidecar(out, r["split"], r["index"]), run_key, fingerprint))]
    if len(todo) < len(mine):
        log.info("encode: %d of %d shard(s) of this rank already finished; resuming", len(mine) - len(todo), len(mine))
    for rec in todo:  # verify input checksums before the workers read the files
        src.read_shard(rec, [src.modalities[0]], ["pair"])
    t_setup = time.perf_counter()
    rows_done = 0
    with torch.inference_mode():
        run = _image_run(todo, plans, src, base, dev)
        bar = tqdm(todo, desc=f"encode (rank {d.rank})" if d.enabled else "encode", unit="shard",
                   disable=len(todo) < 2 or not d.is_main)
        for j, rec in enumerate(bar):
            outcome = _encode_shard(rec, j, src, plans, run, dtype)
            side = {"run_key": run_key, "encoders_sha256": fingerprint, "file": rec["file"], "split": rec["split"],
                    "index": rec["index"], "accounting": outcome.accounting, "rejects": outcome.rejects,
                    "stats": outcome.stats}
            atomic_write_json(_sidecar(out, rec["split"], rec["index"]), side)
            writer.write_shard(rec["split"], rec["index"], outcome.tables)
            rows_done += sum(a["input"] for a in outcome.accounting.values())
            bar.set_postfix(rows_per_s=f"{rows_done / max(1e-9, time.perf_counter() - t_setup):.0f}", refresh=False)
    t_encode = time.perf_counter()
    dist.barrier()

    timing = {"setup_s": round(t_setup - t_start, 3), "encode_s": round(t_encode - t_setup, 3),
              "rows_encoded_by_rank0": rows_done}
    dist.on_main(lambda: _finish(src, out, writer, plans, records, run_key, float(max_reject_fraction), dtype, d,
                                dev, timing))
    return Store(out)


def _finish(src: Store, out: Path, writer: StoreWriter, plans: Mapping[str, ModalityPlan],
            records: list[dict[str, Any]], run_key: str, max_reject_fraction: float, dtype: str,
            d: dist.DistInfo, device: torch.device, timing: dict[str, Any]) -> dict[str, Any]:
    sidecars = []
    for rec in records:
        sc = _read_sidecar(_sidecar(out, rec["split"], rec["index"]), run_key)
        if sc is None or not writer.shard_done(rec["split"], rec["index"]):
            raise StoreError(f"{out}: shard {shard_name(rec['split'], rec['index'])} was not finished by any rank; "
                             "rerun the stage (finished shards are kept).")
        sidecars.append(sc)
    rejects, accounting, stats = _summarise(sidecars, list(plans))
    report = {"rejects": rejects, "accounting": accounting, "max_reject_fraction": max_reject_fraction}
    over = []
    for split, per in accounting.items():
        n_in = sum(a["input"] for a in per.values())
        n_rej = sum(a["rejected"] for a in per.values())
        if n_in and n_rej / n_in > max_reject_fraction:
            over.append(f"{split}: {n_rej} of {n_in} rows ({n_rej / n_in:.2%})")
    if over:
        atomic_write_json(out / REPORT, report)
        reasons = ", ".join(f"{k}: {v}" for k, v in rejects["by_reason"].items())
        raise DataError(
            f"embed: too many input rows were rejected ({'; '.join(over)}), more than max_reject_fraction = "
            f"{max_reject_fraction:g} of a split. Reasons: {reasons}. Every rejected row is listed in "
            f"{out / REPORT}. Fix or remove those inputs, or raise max_reject_fraction, then rerun "
            "(finished shards are kept). No manifest was written."
        )
    writer.add_file(REPORT, json.dumps(report, ensure_ascii=False, indent=1) + "\n", role="rejects")
    for m, plan in plans.items():
        for name, data in plan.encoder.aux_files().items():
            stem, ext = os.path.splitext(name)
            writer.add_file(f"{stem}-{m}{ext}", data, role=f"encoder:{m}")
    shown = dict(rejects)
    if len(rejects["items"]) > MAX_ITEMS_IN_MANIFEST:
        shown["items"] = rejects["items"][:MAX_ITEMS_IN_MANIFEST]
        shown["items_truncated"] = len(rejects["items"]) - MAX_ITEMS_IN_MANIFEST
    info = {
        "encoders": {m: {**plan.encoder.describe(), "input_column": plan.column} for m, plan in plans.items()},
        "dtype": dtype,
        "rejects": shown,
        "accounting": accounting,
        "images": {"reduced_while_decoding": stats.get("reduced_while_decoding", 0)},
        "runtime": {"device": str(device), "world": d.world, **timing},
    }
    manifest = writer.finish(info)
    shutil.rmtree(out / SIDECAR_DIR, ignore_errors=True)
    n_rows = {s: {m: a["kept"] for m, a in per.items()} for s, per in accounting.items()}
    log.info("encode: wrote %s (%s); %d row(s) rejected", out, n_rows, rejects["count"])
    return manifest
