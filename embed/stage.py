"""The embed stage: (encode) → per-modality PCA fitted on the fit split → feature store.

Steps, on one process or under ``torchrun --nproc_per_node=N -m embed SRC OUT ...``:

1. With ``encoders`` set, ``embed.encode.encode_store`` writes the unreduced features store at
   ``OUT/encoded`` (resumable per shard, rank-split); otherwise ``SRC`` is read directly and
   every modality must already hold ``feat``.
2. Statistics of the fit split (pass 1: count and sum; pass 2: centred scatter). Shards go to
   ranks round robin; after every round the per-shard statistics are gathered and added **in
   shard order** on every rank, so the fit is bit-identical to the single-process one.
3. Every split is transformed shard by shard: one output shard per input shard (resumable),
   each rank writing its own; rank 0 writes ``pca-<modality>.npz`` and the manifest last.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mixbench import dist
from mixbench.device import resolve_device
from mixbench.errors import ConfigError, StoreError
from mixbench.stagekit import OutputLock, reusable_store
from mixbench.store.manifest import MANIFEST, lineage_entry, run_key
from mixbench.store.shards import Column, Store, StoreWriter

from .config import EmbedConfig
from .logratio import clr
from .reduce import PCA, Standardizer, mean_from_sums, npz_bytes, null_components

log = logging.getLogger(__name__)

STAGE = "embed"
ALL_SPLITS = "all"  # fit_split value: fit on every split's rows (transductive)
HELDOUT_WARN_RATIO = 0.8  # warn when a held-out split keeps less than this share of the fit rows' variance
ENCODED_DIR = "encoded"
#: Columns of a raw store that a feature store does not carry.
RAW_COLUMNS = ("path", "text", "pixels")

Estimator = PCA | Standardizer


def embed(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: EmbedConfig | Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] = ".",
    overwrite: bool = False,
    reuse: bool = True,
) -> dict[str, Any]:
    """Encode (where asked) and reduce every modality of the store ``src``; write a feature store.

    Returns the manifest (with ``"reused": True`` when an identical finished run is reused).
    Works unchanged under ``torchrun`` (every rank calls it and gets the manifest); rank 0 holds the
    output folder's lock (:class:`mixbench.stagekit.OutputLock`) while the stage runs.
    """
    info = dist.init()
    lock = OutputLock(out, STAGE)
    dist.on_main(lock.acquire)
    try:
        return _embed(src, out, config, base_dir=base_dir, overwrite=overwrite, reuse=reuse, info=info)
    finally:
        if info.is_main:
            lock.release()


def _embed(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: EmbedConfig | Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str],
    overwrite: bool,
    reuse: bool,
    info: dist.DistInfo,
) -> dict[str, Any]:
    cfg = config if isinstance(config, EmbedConfig) else EmbedConfig.from_dict(config)
    out = Path(out)
    source = Store(src)
    conf = cfg.to_dict()
    inputs = {"store": source.input_record(), **_weights_inputs(cfg, Path(base_dir)),
              **_text_source_inputs(cfg, Path(base_dir))}
    key = run_key(STAGE, conf, inputs)

    done = dist.on_main(lambda: _reuse_or_check(out, key, reuse=reuse, overwrite=overwrite))
    if done is not None:
        log.info("embed: %s is complete with the same config and input; reusing it", out)
        return {**done, "reused": True}

    _check_config(cfg, source, encoded=set(cfg.encoders))
    text_cfg = _text_source(cfg, source)
    lineage = [*source.lineage, lineage_entry(STAGE, conf, inputs, seed=cfg.seed)]
    device = _device(cfg.device, info)
    store, encoded_info = source, {}
    if cfg.encoders:
        store, encoded_info = _encode(source, out, cfg, base_dir=Path(base_dir), device=device, inputs=inputs)
        _check_config(cfg, store, encoded=set())
    if text_cfg is not None:
        store = _text_space(store, out, cfg, text_cfg, base_dir=Path(base_dir), device=device, inputs=inputs)
        encoded_info = {**encoded_info, "text_source": store.info["text_source"],
                        **{k: store.info[k] for k in ("rejects", "accounting") if k in store.info}}
        _check_config(cfg, store, encoded=set())

    estimators = _fit(store, cfg, device, info)
    heldout = heldout_variance(store, cfg, estimators, info, device)
    schema = _output_schema(store, cfg, estimators)

    # Rank 0 opens the output first (it clears a replaced store and stale shards), then the others.
    writers: list[StoreWriter] = []
    dist.on_main(lambda: writers.append(_writer(out, store, schema, lineage, key, overwrite, 0)), share=False)
    writer = writers[0] if info.is_main else _writer(out, store, schema, lineage, key, overwrite, info.rank)

    records = [rec for split in store.splits for rec in store.shards(split)]
    keep = sorted({c for cols in schema.values() for c in cols if c != "feat"} | {"feat"})
    mine = dist.my_items(records, info)
    for rec in tqdm(mine, desc="embed write", unit="shard", disable=len(mine) < 4 or not info.is_main):
        if writer.shard_done(rec["split"], rec["index"]):
            continue
        tables = store.read_shard(rec, columns=keep)
        outt = {m: _output_table(tables[m], schema[m], estimators.get(m), cfg.dtype, device,
                                 _features(tables[m], m, rec, store, cfg)) for m in schema}
        writer.write_shard(rec["split"], rec["index"], outt)
    dist.barrier()

    manifest: dict[str, Any] | None = None
    if info.is_main:
        for m, est in estimators.items():
            name = f"{'pca' if isinstance(est, PCA) else 'scaler'}-{m}.npz"
            writer.add_file(name, npz_bytes(est.to_state()), role="pca" if isinstance(est, PCA) else "scaler")
        manifest = writer.finish(_manifest_info(source, store, cfg, estimators, encoded_info, heldout))
        log.info("embed: wrote %s (%s)", out, ", ".join(f"{m} {d['in']}→{d['out']}"
                                                        for m, d in manifest["info"]["dims"].items()))
    dist.barrier()
    if manifest is None:
        manifest = Store(out).manifest
    return manifest


# -- checks -------------------------------------------------------------------------------------
def _reuse_or_check(out: Path, key: str, *, reuse: bool, overwrite: bool) -> dict[str, Any] | None:
    """The reusable manifest, or None to run; a different complete store without ``overwrite`` is
    an error before any work starts."""
    if reuse and (done := reusable_store(out, key, STAGE)) is not None:
        return done
    if (out / MANIFEST).exists() and not overwrite:
        raise StoreError(
            f"{out} already holds a complete store written with another config or input; pass "
            "overwrite=True (CLI: --overwrite) to replace it, or choose another output folder."
        )
    return None


def _check_config(cfg: EmbedConfig, store: Store, *, encoded: set[str]) -> None:
    """Config vs store checks, before any work: encoder modalities exist, every other modality
    has ``feat``, the fit split exists, ``dim`` fits every modality's features and fit rows."""
    where = f"[embed] (input store {store.path})"
    unknown = [m for m in cfg.encoders if m not in store.modalities]
    if unknown:
        raise ConfigError(
            f"{where} encoders.{unknown[0]}: the store has no modality '{unknown[0]}'; "
            f"its modalities are {', '.join(store.modalities)}."
        )
    for m in store.modalities:
        if m not in encoded and not store.has_column(m, "feat"):
            cols = ", ".join(store.schema[m])
            raise ConfigError(
                f"{where}: modality '{m}' has no 'feat' column (columns: {cols}) and no encoder; add "
                f"[embed.encoders.{m}] encoder = ... (CLI: --set encoders.{m}.encoder=NAME; see "
                "`mixbench list encoders`)."
            )
    unknown = [m for m in cfg.log_ratio if m not in store.modalities]
    if unknown:
        raise ConfigError(
            f"{where} log_ratio: the store has no modality '{unknown[0]}'; its modalities are "
            f"{', '.join(store.modalities)}."
        )
    if not cfg.reduces:
        return
    if cfg.fit_split != ALL_SPLITS and cfg.fit_split not in store.splits:
        raise ConfigError(
            f"{where} fit_split = {cfg.fit_split!r}: the store has no such split; its splits are "
            f"{', '.join(store.splits)} (or 'all': every split, transductive)."
        )
    for m in store.modalities:
        if m in encoded:
            continue
        d, n = store.feat_dim(m), fit_rows(store, cfg.fit_split, m)
        if cfg.dim > d:
            raise ConfigError(
                f"{where} dim = {cfg.dim}: larger than the feature dimension of modality '{m}' ({d}); "
                f"choose dim <= {min(store.feat_dim(x) for x in store.modalities if x not in encoded)}."
            )
        if cfg.dim > n:
            raise ConfigError(
                f"{where} dim = {cfg.dim}: larger than the number of {cfg.fit_split} rows of modality '{m}' ({n}); "
                f"PCA keeps at most min(rows, features) = {min(n, d)} components."
            )
        if cfg.dim > 0 and n < 2:
            raise ConfigError(f"{where}: modality '{m}' has {n} {cfg.fit_split} row(s); PCA needs at least 2.")


def _device(name: str, info: dist.DistInfo) -> torch.device:
    dev = resolve_device(name)
    if dev.type == "cuda" and dev.index is None and info.enabled:
        dev = torch.device("cuda", dist.cuda_index(info.local_rank))
    return dev


def fit_shards(store: Store, fit_split: str) -> list[dict[str, Any]]:
    """The shards the fit reads: one split's, or every split's in store order (``fit_split = "all"``)."""
    if fit_split == ALL_SPLITS:
        return [rec for split in store.splits for rec in store.shards(split)]
    return store.shards(fit_split)


def fit_rows(store: Store, fit_split: str, modality: str) -> int:
    splits = store.splits if fit_split == ALL_SPLITS else [fit_split]
    return sum(store.rows(s, modality) for s in splits)


# -- encode -------------------------------------------------------------------------------------
WEIGHT_KEYS = ("pretrained", "weights", "model_config")


def _weights_inputs(cfg: EmbedConfig, base_dir: Path) -> dict[str, Any]:
    """Local files an encoder table names (checkpoints, architecture JSON) with their sha256, so
    that replacing a weights file in place changes the run key and nothing stale is reused."""
    from mixbench.store.manifest import sha256_file

    out: dict[str, Any] = {}
    for modality, table in sorted(cfg.encoders.items()):
        for key in WEIGHT_KEYS:
            value = table.get(key)
            if not isinstance(value, str) or not value:
                continue
            path = Path(value).expanduser()
            path = path if path.is_absolute() else base_dir / path
            if path.is_file():
                out[f"{modality}.{key}"] = {"path": str(path.resolve()), "sha256": sha256_file(path),
                                            "size": path.stat().st_size}
    return out


def _encode(
    store: Store, out: Path, cfg: EmbedConfig, *, base_dir: Path, device: torch.device, inputs: dict[str, Any]
) -> tuple[Store, dict[str, Any]]:
    """Run the encoders into ``out/encoded`` (reused when complete with the same key)."""
    try:
        from .encode import encode_store
    except ModuleNotFoundError as exc:
        if exc.name not in ("embed.encode", "embed.encoders"):
            raise
        raise ConfigError(
            f"[embed] encoders = {sorted(cfg.encoders)}: the encoders are not installed in this copy "
            "(embed/encode.py is missing); remove [embed.encoders] to use the store's own features."
        ) from None
    enc_conf = {"encoders": cfg.encoders, "max_reject_fraction": cfg.max_reject_fraction,
                "dtype": "float32", "seed": cfg.seed}
    key = run_key(f"{STAGE}.encode", enc_conf, inputs)
    path = out / ENCODED_DIR
    if dist.on_main(lambda: reusable_store(path, key, f"{STAGE}.encode") is not None):
        log.info("embed: encoded features at %s are complete with the same encoders; reusing them", path)
        enc = Store(path)
    else:
        lineage = [*store.lineage, lineage_entry(f"{STAGE}.encode", enc_conf, inputs, seed=cfg.seed)]
        # float32 intermediate: the PCA reads full-precision features; cfg.dtype applies to the output.
        enc = encode_store(store, path, cfg.encoders, base_dir=base_dir, device=device, lineage=lineage,
                           run_key=key, max_reject_fraction=cfg.max_reject_fraction, dtype="float32",
                           overwrite=True)
        dist.barrier()
        enc = Store(path)
    einfo = enc.info
    carried = {k: einfo[k] for k in ("rejects", "accounting") if k in einfo}
    carried["encoders"] = einfo.get("encoders", {k: v for k, v in einfo.items() if k not in ("rejects", "accounting")})
    carried["encoded_store"] = {"path": str(path), "manifest_sha256": enc.manifest_sha256}
    return enc, carried


# -- text space ---------------------------------------------------------------------------------
def _text_source_inputs(cfg: EmbedConfig, base_dir: Path) -> dict[str, Any]:
    """The noun list a text source reads (and its text tower's local files), with their sha256:
    editing the list changes the run key, so no stale text space is reused."""
    if not cfg.text_source:
        return {}
    from mixbench.store.manifest import sha256_file

    from .textspace import TextSourceConfig
    from .wordnet import SHIPPED

    tcfg = TextSourceConfig.from_dict(cfg.text_source, "[embed.text_source]")
    out: dict[str, Any] = {}
    files = {"text_source.vocabulary": (base_dir / tcfg.vocabulary if tcfg.vocabulary else SHIPPED)
             if not tcfg.wordnet_dir else base_dir / tcfg.wordnet_dir / "data.noun"}
    files.update({f"text_source.encoder.{k}": base_dir / str(v) for k, v in tcfg.encoder.items()
                  if k in WEIGHT_KEYS and isinstance(v, str) and v})
    for name, path in files.items():
        path = path.expanduser()
        if path.is_file():
            out[name] = {"path": str(path.resolve()), "sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def _text_source(cfg: EmbedConfig, source: Store) -> Any:
    """The text-source config, checked against the input store (None when off)."""
    if not cfg.text_source:
        return None
    from .textspace import TextSourceConfig, check_store

    tcfg = TextSourceConfig.from_dict(cfg.text_source, "[embed.text_source]")
    check_store(tcfg, source, encoded=tcfg.image_modality in cfg.encoders)
    return tcfg


def _text_space(store: Store, out: Path, cfg: EmbedConfig, tcfg: Any, *, base_dir: Path, device: torch.device,
                inputs: dict[str, Any]) -> Store:
    """The paired (image, text) store at ``out/textspace`` (reused when complete with the same key);
    computed on the main process, read by every rank."""
    from .textspace import TEXTSPACE_DIR, build_text_space

    conf = {"encoders": cfg.encoders, "text_source": tcfg.to_dict(), "seed": cfg.seed}
    key = run_key(f"{STAGE}.textspace", conf, {**inputs, "images": store.input_record()})
    path = out / TEXTSPACE_DIR

    def build() -> None:
        if reusable_store(path, key, f"{STAGE}.textspace") is not None:
            log.info("embed: text space at %s is complete with the same settings; reusing it", path)
            return
        lineage = [*store.lineage, lineage_entry(f"{STAGE}.textspace", conf, inputs, seed=cfg.seed)]
        build_text_space(store, path, tcfg, encoders=cfg.encoders, device=device, base_dir=base_dir,
                         lineage=lineage, run_key=key, seed=cfg.seed)

    dist.on_main(build, share=False)
    dist.barrier()
    return Store(path)


# -- fit ----------------------------------------------------------------------------------------
def _estimator(cfg: EmbedConfig, device: torch.device) -> Estimator | None:
    if cfg.dim > 0:
        return PCA(cfg.dim, standardize=cfg.standardize, whiten=cfg.whiten, unit_scale=cfg.unit_scale, device=device)
    if cfg.standardize:
        return Standardizer(device=device)
    return None


def _ordered_sum(
    records: Sequence[dict[str, Any]],
    compute: Callable[[dict[str, Any]], dict[str, Any]],
    info: dist.DistInfo,
    desc: str,
) -> dict[str, Any]:
    """Σ over ``records`` of ``compute(record)`` (dicts of arrays/ints), added in record order.

    Round r: rank k computes record r·W + k (the ``dist.my_items`` assignment); the round's
    results are gathered and added in record order on every rank, so totals are bit-identical
    for any world size and memory holds at most W per-shard results."""
    total: dict[str, Any] = {}
    w = info.world
    rounds = range(0, len(records), w)
    for start in tqdm(rounds, desc=desc, unit="round", disable=len(rounds) < 4 or not info.is_main):
        batch = records[start : start + w]
        mine = compute(batch[info.rank]) if info.rank < len(batch) else None
        parts = dist.all_gather_object(mine)
        for part in parts[: len(batch)]:
            for k, v in part.items():
                total[k] = v if k not in total else _add(total[k], v)
    return total


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        return tuple(_add(x, y) for x, y in zip(a, b, strict=True))
    return a + b


def _fit(store: Store, cfg: EmbedConfig, device: torch.device, info: dist.DistInfo) -> dict[str, Estimator]:
    """One fitted estimator per modality (none when ``dim = 0`` and no standardisation)."""
    ests = {m: e for m in store.modalities if (e := _estimator(cfg, device)) is not None}
    if not ests:
        return {}
    records = fit_shards(store, cfg.fit_split)
    mods = list(ests)

    def sums(rec: dict[str, Any]) -> dict[str, Any]:
        tables = store.read_shard(rec, mods, ["feat", "id"] if cfg.log_ratio else ["feat"])
        return {m: ests[m].shard_sums(_features(tables[m], m, rec, store, cfg)) for m in mods}

    totals = _ordered_sum(records, sums, info, f"embed fit {cfg.fit_split} (1/2)")
    means = {}
    for m in mods:
        n, s = totals.get(m, (0, np.zeros(store.feat_dim(m))))
        if n < (2 if cfg.dim > 0 else 1):
            raise ConfigError(f"[embed]: modality '{m}' has {n} {cfg.fit_split} row(s); the fit needs at least "
                              f"{2 if cfg.dim > 0 else 1}.")
        means[m] = mean_from_sums(n, s)

    def scatter(rec: dict[str, Any]) -> dict[str, Any]:
        tables = store.read_shard(rec, mods, ["feat", "id"] if cfg.log_ratio else ["feat"])
        return {m: ests[m].shard_scatter(_features(tables[m], m, rec, store, cfg), means[m]) for m in mods}

    scatters = _ordered_sum(records, scatter, info, f"embed fit {cfg.fit_split} (2/2)")
    for m in mods:
        n, s = totals[m]
        ests[m].fit_from_stats(n, s, scatters[m])
        est = ests[m]
        if isinstance(est, PCA) and est.whiten and n < est.n_features_in_ and cfg.small_n == "unit_scale":
            log.warning("embed: modality '%s': the PCA is fitted on %d %s rows of %d features (n < d); whitening "
                        "would shrink held-out rows, so this modality is scaled by one number instead (unit_scale; "
                        "small_n = 'whiten' keeps whitening, fit_split = 'all' fits on every row).",
                        m, n, cfg.fit_split, est.n_features_in_)
            est.whiten, est.unit_scale = False, True
        if ests[m].n_constant_features_:
            log.info("embed: modality '%s': %d constant feature(s) keep scale 1", m, ests[m].n_constant_features_)
        if isinstance(ests[m], PCA):
            log.info("embed: modality '%s': PCA %d → %d keeps %.1f%% of the variance", m,
                     ests[m].n_features_in_, cfg.dim, 100 * float(ests[m].explained_variance_ratio_.sum()))
    return ests


def heldout_variance(store: Store, cfg: EmbedConfig, ests: Mapping[str, Estimator], info: dist.DistInfo,
                     device: torch.device) -> dict[str, dict[str, float]]:
    """For a PCA fitted on fewer rows than features (n < d): the variance the other splits' rows keep
    after the transform, as a share of the fit rows' (``{modality: {split: ratio}}``), with a warning
    below :data:`HELDOUT_WARN_RATIO`.

    Why: with n < d the leading sample components partly fit the training rows' own noise, so the
    fit rows have more variance along them than new rows. Whitening scales every component to unit
    variance on the fit rows, so held-out rows come out shrunk (on a 136 × 3,560 view, to about
    half) and a k-means fitted on train puts most of them in one cluster. One more pass over the
    held-out shards (the transform only), run only in that case; nothing to do with
    ``fit_split = "all"``."""
    small = {m: e for m, e in ests.items() if isinstance(e, PCA) and e.n_samples_ < e.n_features_in_}
    if not small or cfg.fit_split == ALL_SPLITS:
        return {}
    out: dict[str, dict[str, float]] = {}
    for split in (s for s in store.splits if s != cfg.fit_split):
        mods = list(small)

        def moments(rec: dict[str, Any]) -> dict[str, Any]:
            tables = store.read_shard(rec, mods, ["feat", "id"] if cfg.log_ratio else ["feat"])
            res = {}
            for m in mods:
                x = torch.from_numpy(np.ascontiguousarray(_features(tables[m], m, rec, store, cfg))).to(device)
                y = small[m].transform_tensor(x).double()
                res[m] = (int(y.shape[0]), y.sum(0).cpu().numpy(), (y * y).sum(0).cpu().numpy())
            return res

        totals = _ordered_sum(store.shards(split), moments, info, f"embed held-out variance {split}")
        for m in mods:
            n, s1, s2 = totals.get(m, (0, None, None))
            if n < 2:
                continue
            var = (s2 - s1 * s1 / n) / (n - 1)
            est = small[m]
            fit_var = _fit_output_variance(est)
            ratio = float(var.sum() / fit_var.sum()) if fit_var.sum() > 0 else 1.0
            out.setdefault(m, {})[split] = ratio
            if ratio < HELDOUT_WARN_RATIO:
                log.warning(
                    "embed: modality '%s': PCA fitted on %d %s rows of %d features (fewer rows than features); the "
                    "%s rows keep %.2f of the fit rows' variance after the transform%s, so clusters fitted on %s "
                    "will not fit them. Fixes: %sfit_split = 'all' (transductive: the PCA sees the %s rows), or "
                    "fewer dimensions.",
                    m, est.n_samples_, cfg.fit_split, est.n_features_in_, split, ratio,
                    " (whitened)" if est.whiten else "", cfg.fit_split,
                    "unit_scale = true instead of whiten (keeps the components' own scale), " if est.whiten else "",
                    split)
    return out


def _fit_output_variance(est: PCA) -> np.ndarray:
    """Per-component variance of the fit rows after the transform (whiten: 1, 0 for null components;
    unit_scale: λ / mean λ; else λ)."""
    lam = np.asarray(est.explained_variance_, dtype=np.float64)
    if est.whiten:
        return np.where(null_components(lam), 0.0, 1.0)
    if est.unit_scale:
        mean = float(np.mean(lam))
        return lam / mean if mean > 0 else lam
    return lam


def _features(table: Mapping[str, np.ndarray], modality: str, rec: Mapping[str, Any], store: Store,
              cfg: EmbedConfig) -> np.ndarray:
    """A shard's ``feat`` of one modality, through the log-ratio transform when ``log_ratio`` names it."""
    if modality not in cfg.log_ratio:
        return table["feat"]
    where = f"{store.path}, split '{rec['split']}' shard {rec['index']}, modality '{modality}'"
    return clr(table["feat"], eps=cfg.log_ratio_eps, ids=table.get("id"), where=where)


# -- write --------------------------------------------------------------------------------------
def _output_schema(store: Store, cfg: EmbedConfig, ests: Mapping[str, Estimator]) -> dict[str, dict[str, Column]]:
    schema: dict[str, dict[str, Column]] = {}
    for m, cols in store.schema.items():
        dim = cfg.dim if isinstance(ests.get(m), PCA) else store.feat_dim(m)
        out = {c: col for c, col in cols.items() if c not in RAW_COLUMNS and c != "feat"}
        out["feat"] = Column(cfg.dtype, (dim,))
        schema[m] = out
    return schema


def _writer(out: Path, store: Store, schema: dict[str, dict[str, Column]], lineage: list[dict[str, Any]],
            key: str, overwrite: bool, rank: int) -> StoreWriter:
    return StoreWriter(out, kind="features", dataset=store.dataset, classes=store.classes, schema=schema,
                       lineage=lineage, run_key=key, multilabel=store.multilabel, overwrite=overwrite, rank=rank)


def _output_table(table: Mapping[str, np.ndarray], schema: Mapping[str, Column], est: Estimator | None,
                  dtype: str, device: torch.device, feat: np.ndarray) -> dict[str, np.ndarray]:
    out = {c: table[c] for c in schema if c != "feat"}
    if est is None:
        out["feat"] = feat.astype(dtype, copy=False)
    else:
        y = est.transform_tensor(torch.from_numpy(np.ascontiguousarray(feat)).to(device))
        out["feat"] = y.to(getattr(torch, dtype)).cpu().numpy()
    return out


def _manifest_info(src: Store, store: Store, cfg: EmbedConfig, ests: Mapping[str, Estimator],
                   encoded: Mapping[str, Any], heldout: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    dims = {m: {"in": store.feat_dim(m), "out": cfg.dim if isinstance(ests.get(m), PCA) else store.feat_dim(m)}
            for m in store.modalities}
    reduce: dict[str, Any] = {}
    for m in store.modalities:
        est = ests.get(m)
        rec: dict[str, Any] = {"method": "pca" if isinstance(est, PCA) else "standardize" if est else "none",
                               "standardized": cfg.standardize,
                               "whitened": bool(est.whiten) if isinstance(est, PCA) else cfg.whiten}
        if isinstance(est, PCA) and est.unit_scale:
            rec["unit_scale"] = float(np.sqrt(np.mean(est.explained_variance_)))
            if cfg.whiten:
                rec["small_n"] = "unit_scale instead of whiten: fitted on fewer rows than features"
        if m in cfg.log_ratio:
            rec.update(log_ratio="clr", log_ratio_eps=cfg.log_ratio_eps)
        if est is not None:
            rec.update(fit_split=cfg.fit_split, fit_rows=int(est.n_samples_),
                       constant_features=int(est.n_constant_features_),
                       file=f"{'pca' if isinstance(est, PCA) else 'scaler'}-{m}.npz")
        if isinstance(est, PCA):
            ratio = [float(x) for x in est.explained_variance_ratio_]
            rec.update(explained_variance_ratio_sum=float(sum(ratio)), explained_variance_ratio=ratio)
        if m in heldout:
            rec["heldout_variance_ratio"] = dict(heldout[m])
        reduce[m] = rec
    return {"dims": dims, "reduce": reduce, "dtype": cfg.dtype, **dict(encoded), "upstream": src.info}
