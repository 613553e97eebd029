"""The unpair stage: features store → benchmark store with a ratio of the training pairs broken.

Steps (the stage template of ``prep/stage.py``): build the config → record the input store →
run key → reuse an identical finished run → plan the selection per split → write one output
shard per input shard through :class:`mixbench.store.shards.StoreWriter` → ``selection.h5`` (aux file) →
``finish(info)``.

Per split, the linked pairs (``pair >= 0`` in both tables) are put in canonical order (sorted by
pair id). The training split uses ``ratio`` and ``strategy`` (loss strategies train the scorer of
:mod:`unpair.scoring` on the paired training split first); every other split uses ``test_ratio``
with the ``random`` strategy, since the loss ranking exists only for the training split. Rows that
arrive unlinked (``pair == -1``) pass through unchanged.

Modes: ``drop`` keeps one half of a broken pair (pair = -1) and removes the other;
``zero`` keeps both rows in place, zero-fills the missing half's ``feat`` (and blanks its raw
references) and sets its ``present`` column to 0, both rows get pair = -1; ``decouple`` keeps
both halves with pair = -1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from mixbench.config import canonical_json
from mixbench.device import resolve_device
from mixbench.errors import ConfigError, DataError, StoreError
from mixbench.stagekit import OutputLock, reusable_store
from mixbench.store.manifest import lineage_entry, run_key
from mixbench.store.shards import Column, Store, StoreWriter

from .config import BALANCED, UnpairConfig
from .scoring import ScoreResult, load_scores, save_scores, score_cache_key, score_pairs
from .strategies import Selection, assign_kept, get_strategy, ranks_of, select

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.h5"
PRESENT = "present"
TRAIN = "train"
_PURPOSE = {"select": 1, "keep": 2}


@dataclass
class SplitPairs:
    """The linked pairs of one split in canonical order (ascending pair id)."""

    pair: np.ndarray  # (n,) int64
    label: np.ndarray  # (n,) int64 or (n, C) multi-hot, from the first modality
    ids: dict[str, np.ndarray]  # modality -> (n,) ids of each pair's half
    rows: dict[str, np.ndarray]  # modality -> (n,) row of each half in the split (shards concatenated)
    n_rows: dict[str, int]  # rows per modality in the input split
    feat: dict[str, np.ndarray] | None = None  # modality -> (n, D) features aligned to `pair` (when loaded)

    def __len__(self) -> int:
        return len(self.pair)


@dataclass
class SplitPlan:
    """What happens to one split: which pairs break and which half of each survives."""

    split: str
    strategy: str
    ratio: float
    pairs: SplitPairs
    selection: Selection
    kept: np.ndarray  # (n,) int8: 0/1 = index of the surviving modality, -1 = not broken (or decouple)
    scores: ScoreResult | None = None

    @property
    def broken(self) -> np.ndarray:
        return self.selection.broken


def _rng(seed: int, split: str, purpose: str) -> np.random.Generator:
    """A generator derived from the one config seed, independent per split and purpose."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), _PURPOSE[purpose]])


def check_source(store: Store, cfg: UnpairConfig) -> list[str]:
    """Check the input store fits the config; returns its two modalities."""
    mods = store.modalities
    if len(mods) != 2:
        raise StoreError(
            f"{store.path}: unpair needs exactly two modalities, the store has {len(mods)} ({', '.join(mods)}). "
            "Select two modalities at prep (or embed) and rerun."
        )
    if store.kind == "benchmark" or any(store.has_column(m, PRESENT) for m in mods):
        raise StoreError(
            f"{store.path}: this is already a benchmark store (kind {store.kind!r}); unpair reads the paired "
            "features store written by embed (or a paired store). Point unpair at the embed output."
        )
    if TRAIN not in store.splits:
        raise StoreError(f"{store.path}: no '{TRAIN}' split (splits: {store.splits}); the ratio applies to training pairs.")
    if cfg.keep != BALANCED and cfg.keep not in mods:
        raise ConfigError(
            f"[unpair] keep = {cfg.keep!r}: not a modality of {store.path}; use 'balanced' or one of {', '.join(mods)}."
        )
    if cfg.balance_classes and store.multilabel:
        raise ConfigError(
            f"[unpair] balance_classes = true: {store.path} is multi-label, so classes overlap and cannot be "
            "balanced; set balance_classes = false."
        )
    if get_strategy(cfg.strategy).needs_scores:
        resolve_device(cfg.device)  # a bad device fails here, before any work
        for m in mods:
            if not store.has_column(m, "feat"):
                raise StoreError(
                    f"{store.path}: modality '{m}' has no 'feat' column, which strategy {cfg.strategy!r} needs to "
                    "score the pairs; run embed first or use the random/positional strategy."
                )
    return mods


def read_pairs(store: Store, split: str, mods: list[str], *, with_feat: bool = False) -> SplitPairs:
    """Load the pair links of ``split`` and check them: pair ids unique per table, every linked
    pair present in both tables, and both halves carrying the same label."""
    cols = ["id", "label", "pair"] + (["feat"] if with_feat else [])
    loaded: dict[str, dict[str, np.ndarray]] = {}
    where_rows: dict[str, list[tuple[str, int]]] = {}
    for m in mods:
        parts: dict[str, list[np.ndarray]] = {c: [] for c in cols}
        files: list[tuple[str, int]] = []
        for rec, tables in store.iter_shards(split, [m], cols):
            for c in cols:
                parts[c].append(tables[m][c])
            files.append((rec["file"], len(tables[m]["pair"])))
        loaded[m] = {c: np.concatenate(v) if v else np.empty(0) for c, v in parts.items()}
        where_rows[m] = files

    def locate(m: str, row: int, field: str = "pair") -> str:
        for file, count in where_rows[m]:
            if row < count:
                return f"{store.path / file}:{row} [{m}.{field}]"
            row -= count
        return f"{store.path} [{m}.{field}]"

    linked_rows: dict[str, np.ndarray] = {}
    linked_ids: dict[str, np.ndarray] = {}
    for m in mods:
        p = loaded[m]["pair"].astype(np.int64)
        if (p < -1).any():
            row = int(np.flatnonzero(p < -1)[0])
            raise DataError(f"{locate(m, row)}: pair id {int(p[row])} is negative; pair ids are >= 0, or -1 for no pair.")
        rows = np.flatnonzero(p >= 0)
        order = rows[np.argsort(p[rows], kind="stable")]
        sp = p[order]
        dup = np.flatnonzero(sp[1:] == sp[:-1])
        if len(dup):
            row = int(order[dup[0] + 1])
            raise DataError(
                f"{locate(m, row)}: pair id {int(p[row])} appears more than once in split '{split}'; each pair "
                "links one row per modality. Rebuild the store with prep."
            )
        linked_rows[m], linked_ids[m] = order, sp
    a, b = mods
    if not np.array_equal(linked_ids[a], linked_ids[b]):
        only_a = np.setdiff1d(linked_ids[a], linked_ids[b])
        m, other, pid = (a, b, only_a[0]) if len(only_a) else (b, a, np.setdiff1d(linked_ids[b], linked_ids[a])[0])
        row = int(linked_rows[m][np.searchsorted(linked_ids[m], pid)])
        raise DataError(
            f"{locate(m, row)}: pair id {int(pid)} has no '{other}' row in split '{split}'; a linked pair needs "
            "both halves (set the pair to -1 for an unpaired row)."
        )
    la = loaded[a]["label"][linked_rows[a]]
    lb = loaded[b]["label"][linked_rows[b]]
    differ = np.flatnonzero((la != lb).reshape(len(la), -1).any(axis=1))
    if len(differ):
        i = int(differ[0])
        raise DataError(
            f"{locate(b, int(linked_rows[b][i]), 'label')}: pair {int(linked_ids[a][i])} has label {la[i].tolist()} "
            f"in '{a}' but {lb[i].tolist()} in '{b}'; both halves of a pair must share the label. Fix the source and rerun prep."
        )
    feat = {m: loaded[m]["feat"][linked_rows[m]] for m in mods} if with_feat else None
    return SplitPairs(
        pair=linked_ids[a],
        label=la,
        ids={m: loaded[m]["id"][linked_rows[m]] for m in mods},
        rows=linked_rows,
        n_rows={m: int(len(loaded[m]["pair"])) for m in mods},
        feat=feat,
    )


def plan_split(store: Store, split: str, mods: list[str], cfg: UnpairConfig, *, progress: bool = True,
               score_cache: str | os.PathLike[str] | None = None) -> SplitPlan:
    """Choose the broken pairs of one split and the surviving half of each.

    ``score_cache``: a folder of finished scoring runs keyed by what the scores depend on
    (:func:`unpair.scoring.score_cache_key`: input store checksums, split, modalities, scorer
    settings, seed, device; not the ratio, strategy or mode), so that runs that differ only in
    those (a sweep's ratios) train the scorer once. A cached result is the same array the scorer
    would compute again (the scorer is deterministic for a seed on one device)."""
    is_train = split == TRAIN
    strategy = cfg.strategy if is_train else "random"
    ratio = cfg.ratio if is_train else cfg.test_ratio
    needs_scores = get_strategy(strategy).needs_scores
    pairs = read_pairs(store, split, mods, with_feat=needs_scores)
    scores: ScoreResult | None = None
    if needs_scores:
        assert pairs.feat is not None
        cached: Path | None = None
        if score_cache is not None:
            content = {k: v for k, v in store.input_record().items() if k != "path"}  # the folder may move
            key = score_cache_key(content, split, mods, cfg.scorer(), cfg.seed,
                                  str(resolve_device(cfg.scorer().device)))
            cached = Path(score_cache) / f"scores-{key[:32]}.npz"
        if cached is not None and cached.exists():
            scores = _cached_scores(cached, split, pairs.pair)
        else:
            scores = score_pairs(
                pairs.feat[mods[0]], pairs.feat[mods[1]], pairs.pair, cfg.scorer(), seed=cfg.seed, progress=progress
            )
            if cached is not None:
                save_scores(cached, scores)
        pairs.feat = None  # release the features; only the scores are kept
    sel = select(
        strategy,
        n_pairs=len(pairs),
        ratio=ratio,
        rng=_rng(cfg.seed, split, "select"),
        scores=None if scores is None else scores.scores,
    )
    if cfg.mode == "decouple":
        kept = np.full(len(pairs), -1, dtype=np.int8)
    else:
        keep: str | int = cfg.keep if cfg.keep == BALANCED else mods.index(cfg.keep)
        labels = pairs.label if cfg.balance_classes else None
        kept = assign_kept(sel.broken, keep, _rng(cfg.seed, split, "keep"), labels=labels)
    return SplitPlan(split, strategy, ratio, pairs, sel, kept, scores)


def _cached_scores(path: Path, split: str, pair: np.ndarray) -> ScoreResult:
    """A cached scoring run, checked to cover exactly the split's pairs (an unreadable or foreign
    file is refused, naming it and the fix)."""
    try:
        scores = load_scores(path)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{path}: cached loss scores for split '{split}' cannot be read ({exc}); delete the "
                         "file and rerun (the scorer trains again).") from None
    if not np.array_equal(scores.pair, np.sort(pair)):
        raise StoreError(f"{path}: cached loss scores for split '{split}' do not cover the split's pairs; delete "
                         "the file and rerun (the scorer trains again).")
    log.info("unpair: %s scores from the cache %s", split, path)
    return scores


def output_schema(store: Store, mode: str) -> dict[str, dict[str, Column]]:
    schema = {m: dict(cols) for m, cols in store.schema.items()}
    if mode == "zero":
        for cols in schema.values():
            cols[PRESENT] = Column("uint8")
    return schema


def _broken_rows(pair: np.ndarray, m_index: int, plan: SplitPlan) -> tuple[np.ndarray, np.ndarray]:
    """For rows with pair ids ``pair`` of modality ``m_index``: (row's pair is broken, row is the removed half).

    In decouple mode no half is removed (``plan.kept`` is -1 everywhere)."""
    p = np.asarray(pair, dtype=np.int64)
    known = plan.pairs.pair
    if len(known) == 0:
        none = np.zeros(len(p), dtype=bool)
        return none, none
    pos = np.clip(np.searchsorted(known, p), 0, len(known) - 1)
    broken = (p >= 0) & (known[pos] == p) & plan.broken[pos]
    kept = plan.kept[pos]
    missing = broken & (kept >= 0) & (kept != m_index)
    return broken, missing


def transform_table(table: Mapping[str, np.ndarray], m_index: int, plan: SplitPlan, mode: str) -> dict[str, np.ndarray]:
    """Apply the plan to one modality's table of one shard (modality index ``m_index``)."""
    broken, missing = _broken_rows(table["pair"], m_index, plan)
    out = {c: np.array(v, copy=True) for c, v in table.items()}
    out["pair"] = np.where(broken, -1, np.asarray(table["pair"], dtype=np.int64)).astype(np.int64)
    if mode == "decouple":
        return out
    if mode == "drop":
        return {c: v[~missing] for c, v in out.items()}
    for c, v in out.items():  # zero: the row stays, its content is emptied and masked
        if c in ("id", "label", "pair"):
            continue
        v[missing] = "" if v.dtype == object else 0
    out[PRESENT] = (~missing).astype(np.uint8)
    return out


def _split_summary(plan: SplitPlan, mods: list[str], classes: list[str], mode: str, multilabel: bool) -> dict[str, Any]:
    n = len(plan.pairs)
    sel = plan.selection
    out: dict[str, Any] = {
        "strategy": plan.strategy,
        "ratio": plan.ratio,
        "n_pairs": n,
        "n_broken": sel.n_broken,
        "count_rule": sel.rule,
        **{k: v for k, v in sel.details.items()},
    }
    if plan.split != TRAIN:
        out["note"] = "non-train splits use test_ratio with the random strategy; the loss ranking exists only for train"
    if mode == "decouple":
        out["kept"] = {"both": sel.n_broken}
    else:
        out["kept"] = {m: int(np.count_nonzero(plan.kept == i)) for i, m in enumerate(mods)}
    member = _membership(plan.pairs.label, len(classes), multilabel)
    per_class: dict[str, dict[str, int]] = {}
    for c, name in enumerate(classes):
        in_c = member[:, c]
        rec = {"pairs": int(in_c.sum()), "broken": int((in_c & plan.broken).sum())}
        if mode != "decouple":
            for i, m in enumerate(mods):
                rec[f"kept_{m}"] = int((in_c & (plan.kept == i)).sum())
        per_class[name] = rec
    out["per_class"] = per_class
    return out


def _membership(labels: np.ndarray, n_classes: int, multilabel: bool) -> np.ndarray:
    """(n, C) bool: pair i belongs to class c."""
    if multilabel:
        return np.asarray(labels).astype(bool)
    lab = np.asarray(labels, dtype=np.int64)
    if len(lab) and (lab.min() < 0 or lab.max() >= n_classes):
        raise DataError(f"labels must lie in 0..{n_classes - 1} (the store lists {n_classes} classes); found {lab.min()}..{lab.max()}.")
    member = np.zeros((len(lab), n_classes), dtype=bool)
    member[np.arange(len(lab)), lab] = True
    return member


def write_selection(path: Path, plans: list[SplitPlan], mods: list[str], cfg: UnpairConfig, summary: Mapping[str, Any]) -> None:
    """``selection.h5``: per split, every linked pair (canonical order) with its ids, label, broken
    flag and surviving modality; for a scored split also score, rank, the per-epoch score matrix and
    the scorer's training loss."""
    str_dt = h5py.string_dtype("utf-8")
    kw = {"track_times": False}
    with h5py.File(path, "w", track_order=False) as f:
        f.attrs["summary"] = canonical_json(summary)
        f.attrs["modalities"] = json.dumps(mods)
        f.attrs["seed"] = cfg.seed
        f.attrs["mode"] = cfg.mode
        for plan in plans:
            g = f.create_group(plan.split)
            g.attrs["strategy"] = plan.strategy
            g.attrs["ratio"] = plan.ratio
            g.attrs["n_broken"] = plan.selection.n_broken
            g.attrs["count_rule"] = plan.selection.rule
            pr = plan.pairs
            g.create_dataset("pair", data=pr.pair, **kw)
            ids = g.create_group("id")
            for m in mods:
                ids.create_dataset(m, data=pr.ids[m].astype(object), dtype=str_dt, **kw)
            g.create_dataset("label", data=pr.label, **kw)
            g.create_dataset("broken", data=plan.broken.astype(np.uint8), **kw)
            names = np.array([""] * len(pr), dtype=object)
            if cfg.mode == "decouple":
                names[plan.broken] = "both"
            else:
                for i, m in enumerate(mods):
                    names[plan.kept == i] = m
            g.create_dataset("kept", data=names, dtype=str_dt, **kw)
            if plan.scores is not None:
                sc = plan.scores
                g.create_dataset("score", data=sc.scores, **kw)
                g.create_dataset("rank", data=ranks_of(sc.scores), **kw)
                g.create_dataset("per_epoch_score", data=sc.per_epoch, **kw)
                g.create_dataset("train_loss", data=np.asarray(sc.train_loss, dtype=np.float64), **kw)
                if sc.reference is not None:
                    g.create_dataset("reference_pair", data=sc.reference, **kw)
                g.attrs["rank_order"] = "ascending score: rank 0 = lowest loss; ties by pair id"
                g.attrs["score"] = f"mean per-sample symmetric InfoNCE over the last {sc.settings.window} epochs"


def unpair(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: UnpairConfig | Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    reuse: bool = True,
    progress: bool | None = None,
    score_cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Break a ratio of the training pairs of the features store ``src``; write the benchmark store ``out``.

    ``score_cache``: a folder where the loss scorer's results are kept and looked up (see
    :func:`plan_split`); the sweep passes one so that its ratios and strategies share a seed's scores.

    Returns the manifest (``{**manifest, "reused": True}`` when an identical finished run at ``out``
    is reused). ``config`` is an :class:`UnpairConfig` or a plain mapping of its keys. The output
    folder is locked while the stage runs (:class:`mixbench.stagekit.OutputLock`).
    """
    with OutputLock(out, "unpair"):
        return _unpair(src, out, config, overwrite=overwrite, reuse=reuse, progress=progress, score_cache=score_cache)


def _unpair(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: UnpairConfig | Mapping[str, Any] | None,
    *,
    overwrite: bool,
    reuse: bool,
    progress: bool | None,
    score_cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    cfg = config if isinstance(config, UnpairConfig) else UnpairConfig.from_dict(config)
    if Path(out).resolve() == Path(src).resolve():
        raise ConfigError(f"unpair: the output folder {out} is the input store; choose another output folder.")
    store = Store(src)
    mods = check_source(store, cfg)
    inputs = {"store": store.input_record()}
    conf = cfg.to_dict()
    key = run_key("unpair", conf, inputs)
    if reuse and (done := reusable_store(out, key, "unpair")) is not None:
        log.info("unpair: %s is complete with the same config and input; reusing it", out)
        return {**done, "reused": True}
    entry = lineage_entry("unpair", conf, inputs, seed=cfg.seed)

    if progress is None:  # bars on an interactive terminal at INFO level; off under -q and in logs
        progress = log.isEnabledFor(logging.INFO) and sys.stderr.isatty()
    plans = [plan_split(store, split, mods, cfg, progress=progress, score_cache=score_cache) for split in store.splits]
    splits_info = {p.split: _split_summary(p, mods, store.classes, cfg.mode, store.multilabel) for p in plans}
    summary: dict[str, Any] = {
        "mode": cfg.mode,
        "strategy": cfg.strategy,
        "keep": cfg.keep,
        "balance_classes": cfg.balance_classes,
        "seed": cfg.seed,
        "ratio": cfg.ratio,
        "test_ratio": cfg.test_ratio,
        "modalities": mods,
        "splits": splits_info,
        "selection_file": SELECTION_FILE,
    }
    train_plan = next(p for p in plans if p.split == TRAIN)
    if train_plan.scores is not None:
        summary["scorer"] = train_plan.scores.summary()

    writer = StoreWriter(
        out,
        kind="benchmark",
        dataset=store.dataset,
        classes=store.classes,
        schema=output_schema(store, cfg.mode),
        lineage=store.lineage + [entry],
        run_key=key,
        multilabel=store.multilabel,
        overwrite=overwrite,
    )
    for plan in plans:
        counts = {m: 0 for m in mods}
        recs = store.shards(plan.split)
        for rec in tqdm(recs, desc=f"unpair {plan.split}", unit="shard", disable=not progress or len(recs) < 4):
            if writer.shard_done(plan.split, rec["index"]):  # finished by an interrupted run with this key
                tables = store.read_shard(rec, mods, ["pair"])
                for i, m in enumerate(mods):
                    _, missing = _broken_rows(tables[m]["pair"], i, plan)
                    counts[m] += len(missing) - (int(missing.sum()) if cfg.mode == "drop" else 0)
                continue
            tables = store.read_shard(rec)
            new = {m: transform_table(tables[m], i, plan, cfg.mode) for i, m in enumerate(mods)}
            writer.write_shard(plan.split, rec["index"], new)
            for m in mods:
                counts[m] += len(new[m]["pair"])
        info_split = splits_info[plan.split]
        info_split["rows_out"] = counts
        info_split["unlinked_rows_in"] = {m: plan.pairs.n_rows[m] - len(plan.pairs) for m in mods}
    writer.add_file(SELECTION_FILE, lambda tmp: write_selection(tmp, plans, mods, cfg, summary), role="selection")
    info = {**store.info, "unpair": summary}
    manifest = writer.finish(info)
    tr = splits_info[TRAIN]
    log.info(
        "unpair: wrote %s (%s, %s): train %d of %d pairs broken, kept %s",
        out, cfg.mode, cfg.strategy, tr["n_broken"], tr["n_pairs"], tr["kept"],
    )
    return manifest
