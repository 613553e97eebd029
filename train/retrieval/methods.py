"""Retrieval methods of the train stage (family ``retrieval``): ``retrieval-cca``,
``retrieval-hash`` and ``retrieval-twotower``.

Each loads the store with the retrieval protocol (:mod:`train.retrieval.data`), fits its model
(:mod:`train.retrieval.models`) on the training split, encodes the query and database rows and
scores both directions (:mod:`train.retrieval.evaluate`): I→T (first-modality queries against
the second modality's database) and T→I. metrics.json gets ``{name: {"test": {map_i2t, map_t2i,
map_mean, map_at_r_*, p@k_*}}}``, the report the table, the protocol and the PR curves.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mixbench.config import Config, option
from mixbench.errors import ConfigError, DataError, StoreError
from mixbench.store.manifest import atomic_write_bytes

from ..registry import Method, MethodResult, RunContext, register_method
from .data import ZERO_INPUTS, RetrievalData, labelled, load_retrieval
from .evaluate import DEFAULT_KS, RankingScores, rank_scores
from .models import CCAModel, HashModel, TwoTowerModel

log = logging.getLogger(__name__)

CODE_LENGTHS = (16, 32, 64)
DIRECTIONS = ("i2t", "t2i")


@dataclass(frozen=True)
class RetrievalOptions(Config):
    """Options every retrieval method shares (evaluation protocol)."""

    section: ClassVar[str] = "train.method_options"

    query_split: str = option("test", "split the queries come from (absent: 'val', else train, noted in the report)")
    ks: list[int] = option(list(DEFAULT_KS), "cut-offs of precision@k", low=1)
    pr_points: int = option(50, "points of the precision-recall curve (cut-offs spread evenly over the ranking)", low=1)
    zero_input: str = option("skip", "training halves zero-filled by unpair's 'zero' mode: 'skip' (not loaded; the "
                                     "present half is an unpaired row) or 'zero-vector' (UMML's form: a zero input "
                                     "linked to its present partner as a pair)", choices=ZERO_INPUTS)


@dataclass(frozen=True)
class CCAOptions(RetrievalOptions):
    n_components: int = option(10, "canonical components (at most the smaller feature dim)", low=1)
    max_iter: int = option(500, "scikit-learn CCA's iteration cap", low=1)


@dataclass(frozen=True)
class EpochOptions(RetrievalOptions):
    """Options of the methods trained in epochs (checkpoints)."""

    checkpoint_every: int = option(1, "write the training state to checkpoints/last.pt every N epochs and after the "
                                      "last (0: only after the last); a killed run resumes from it exactly", low=0)


@dataclass(frozen=True)
class HashOptions(EpochOptions):
    bits: int = option(64, "code length K", choices=CODE_LENGTHS)
    hiddens: list[int] = option([512], "hidden widths of each modality's MLP", low=1)
    epochs: int = option(30, "training epochs (one pass over each modality's rows each)", low=1)
    batch_size: int = option(128, "mini-batch rows", low=2)
    lr: float = option(1e-3, "Adam learning rate", low=0, low_open=True)
    weight_decay: float = option(1e-4, "Adam weight decay", low=0)
    gamma: float = option(1.0, "weight of the quantisation term ‖B − F‖² (DCMH's γ)", low=0)
    eta: float = option(0.01, "weight of the bit-balance term ‖F·1‖² (DCMH's η is 1; on Wikipedia's 2,173 training rows "
                              "that weight swamps the likelihood: mean mAP 0.154 against 0.231 at 0.01, seed 0)", low=0)


@dataclass(frozen=True)
class TwoTowerOptions(EpochOptions):
    dim: int = option(64, "shared embedding dimension", low=1)
    hiddens: list[int] = option([], "hidden widths of each modality's MLP (empty: linear towers; on Wikipedia's 2,173 "
                                    "training pairs a 512-wide hidden layer overfits)", low=1)
    epochs: int = option(30, "training epochs (one pass over the larger of the pair and row sets)", low=1)
    batch_size: int = option(128, "pairs (and rows per modality, with labels) per mini-batch", low=2)
    lr: float = option(1e-3, "Adam learning rate", low=0, low_open=True)
    weight_decay: float = option(1e-3, "Adam weight decay", low=0)
    temperature: float = option(1.0, "InfoNCE temperature", low=0, low_open=True)
    labels: bool = option(False, "also learn from labels: every labelled training row (linked or unpaired) is "
                                 "pulled to its class's prototype, shared by both modalities")
    label_temperature: float = option(1.0, "temperature of the prototype logits (labels = true)", low=0, low_open=True)
    pair_weight: float = option(1.0, "weight of the InfoNCE term on the linked pairs (0: labels only)", low=0)


def _build(name: str, opts: Config) -> Any:
    if isinstance(opts, CCAOptions):
        return CCAModel(opts.n_components, opts.max_iter)
    if isinstance(opts, HashOptions):
        return HashModel(opts.bits, list(opts.hiddens), opts.epochs, opts.batch_size, opts.lr, opts.gamma, opts.eta,
                         opts.weight_decay)
    if isinstance(opts, TwoTowerOptions):
        return TwoTowerModel(opts.dim, list(opts.hiddens), opts.epochs, opts.batch_size, opts.lr, opts.temperature,
                             opts.weight_decay, labels=opts.labels, pair_weight=opts.pair_weight,
                             label_temperature=opts.label_temperature)
    raise TypeError(f"{name}: unexpected options {type(opts).__name__}")


CHECKPOINT = "last.pt"
CHECKPOINT_FORMAT = "mixbench-retrieval-checkpoint"
CHECKPOINT_VERSION = 1


class RetrievalCheckpoints:
    """``checkpoints/last.pt`` of a deep retrieval method: written every ``checkpoint_every`` epochs and
    after the last one (:func:`train.checkpoint.save_checkpoint`: a header line with the payload's
    sha256, temp file, fsync, rename), read back with :func:`train.checkpoint.read_verified`. It names
    the run (method, options but ``checkpoint_every``, seed, input store) and holds the training state
    after its epoch (:func:`train.retrieval.models._common_state` and the model's own tensors); a
    checkpoint of another run is refused, naming the fields that differ. Resuming restores the run
    log's rows up to that epoch."""

    def __init__(self, ctx: RunContext, name: str, every: int) -> None:
        assert ctx.checkpoint_dir is not None
        self.path = ctx.checkpoint_dir / CHECKPOINT
        self.every = every
        self.total = int(getattr(ctx.options, "epochs", 0))
        self.runlog = ctx.runlog
        options = {k: v for k, v in ctx.options.to_dict().items() if k != "checkpoint_every"}
        self.ident = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "method": name,
                      "options": options, "seed": ctx.cfg.seed, "input_sha256": ctx.input_sha256}
        self.resumed_at: int | None = None

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        from ..checkpoint import read_verified

        state = read_verified(self.path)
        if not isinstance(state, dict):
            raise StoreError(f"{self.path}: not a mixbench retrieval checkpoint; delete it or rerun with overwrite "
                             "(CLI: --overwrite).")
        diffs = [f"{k}: {state.get(k)!r} (checkpoint) vs {v!r} (now)" for k, v in self.ident.items()
                 if state.get(k) != v]
        if diffs:
            raise ConfigError(f"{self.path}: checkpoint of another run; fields that differ: {'; '.join(diffs)}. "
                              "Restore them to resume, or rerun with overwrite (CLI: --overwrite).")
        self.resumed_at = int(state["epoch"])
        if self.runlog is not None:
            self.runlog.restore(list(state["rows"]))
        log.info("%s: resuming after epoch %d from %s", self.ident["method"], self.resumed_at, self.path)
        return state

    def save(self, epoch: int, state: Any) -> None:
        if epoch != self.total and not (self.every and epoch % self.every == 0):
            return
        from ..checkpoint import save_checkpoint

        save_checkpoint(self.path, {**self.ident, **state()})


def _load(store: Any, device: torch.device, options: Config) -> RetrievalData:
    assert isinstance(options, RetrievalOptions)
    return load_retrieval(store, device=device, query_split=options.query_split, zero_input=options.zero_input)


def check_retrieval(data: Any, ctx: RunContext) -> None:
    """Refuse what no retrieval method can score: an empty query or database side, unlabelled queries."""
    assert isinstance(data, RetrievalData)
    a, b = data.modalities
    for split_name, split in (("query", data.query), ("database", data.database)):
        for m in (a, b):
            if split.n(m) == 0:
                raise DataError(
                    f"split '{data.protocol[split_name]}' ({split_name}) has no '{m}' rows; I→T and T→I need both "
                    "modalities on the query and the database side (lower [unpair] test_ratio, or use mode zero/decouple)."
                )
            if not bool(labelled(split.rows[m].y).all()):
                raise DataError(
                    f"split '{data.protocol[split_name]}' ({split_name}), modality '{m}': rows without a label; "
                    "relevance (a shared label) cannot be decided for them."
                )


def score_directions(model: Any, data: RetrievalData, opts: RetrievalOptions) -> dict[str, RankingScores]:
    q, db = data.query.rows, data.database.rows
    a, b = data.modalities
    enc = {("q", 0): model.encode(q[a].x, 0), ("q", 1): model.encode(q[b].x, 1),
           ("d", 0): model.encode(db[a].x, 0), ("d", 1): model.encode(db[b].x, 1)}
    kw = {"ranking": model.ranking, "ks": opts.ks, "pr_points": opts.pr_points}
    return {
        "i2t": rank_scores(enc["q", 0], enc["d", 1], q[a].y, db[b].y, **kw),
        "t2i": rank_scores(enc["q", 1], enc["d", 0], q[b].y, db[a].y, **kw),
    }


def flat_metrics(scores: dict[str, RankingScores]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d, s in scores.items():
        out.update({f"{k}_{d}": v for k, v in s.summary().items()})
    out["map_mean"] = (scores["i2t"].map + scores["t2i"].map) / 2
    out["map_at_r_mean"] = (scores["i2t"].map_at_r + scores["t2i"].map_at_r) / 2
    return out


def retrieval_table(rows: dict[str, dict[str, float]], ks: list[int]) -> str:
    """Markdown: one row per method, mAP both directions and their mean, mAP@R, P@k (the largest k ≤ 100)."""
    k = max([x for x in ks if x <= 100] or [min(ks)])
    lines = [f"| method | mAP I→T | mAP T→I | mAP mean | mAP@R I→T | mAP@R T→I | P@{k} I→T | P@{k} T→I |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['map_i2t']:.4f} | {m['map_t2i']:.4f} | {m['map_mean']:.4f} | "
                     f"{m['map_at_r_i2t']:.4f} | {m['map_at_r_t2i']:.4f} | {m[f'p@{k}_i2t']:.4f} | {m[f'p@{k}_t2i']:.4f} |")
    return "\n".join(lines)


def pr_plot(curves: dict[str, dict[str, RankingScores]], path: Path, title: str) -> bool:
    """Precision-recall curves, one panel per direction, one line per method. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=120)
    for ax, d, label in zip(axes, DIRECTIONS, ("image → text", "text → image")):
        for name, scores in curves.items():
            s = scores[d]
            ax.plot(s.pr_recall, s.pr_precision, "-", label=f"{name} (mAP {s.map:.3f})")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return True


def rows_used(data: RetrievalData) -> dict[str, int]:
    ia, _ = data.linked()
    a, b = (data.train.rows[m] for m in data.modalities)
    return {"linked_pairs": int(len(ia)), f"unpaired_{data.modalities[0]}": a.n() - int(len(ia)),
            f"unpaired_{data.modalities[1]}": b.n() - int(len(ia))}


@contextlib.contextmanager
def fit_threads(ctx: RunContext) -> Iterator[None]:
    """CPU threads while fitting: ``[train] threads``, or 1 when it is 0 (auto). These models are
    small: their ops are too small to split, and on a busy 2-core machine two threads stall in
    barriers (a two-tower fit took 60–90 s instead of 1.5 s). Also caps the BLAS pools (CCA)."""
    if ctx.device.type != "cpu":
        yield
        return
    n = ctx.cfg.threads or 1
    from threadpoolctl import threadpool_limits

    from ..dm2c import cpu_threads

    with cpu_threads(n), threadpool_limits(limits=n):
        yield


def make_run(name: str) -> Any:
    def run(data: Any, ctx: RunContext) -> MethodResult:
        assert isinstance(data, RetrievalData)
        opts = ctx.options
        assert isinstance(opts, RetrievalOptions)
        torch.manual_seed(ctx.cfg.seed)
        model = _build(name, opts)
        hook = ctx.runlog.append if ctx.runlog is not None else None
        ckpt = (RetrievalCheckpoints(ctx, name, opts.checkpoint_every)
                if ctx.checkpoint_dir is not None and isinstance(opts, EpochOptions) else None)
        t0 = time.perf_counter()
        with fit_threads(ctx):
            if ckpt is not None:
                model.fit(data, seed=ctx.cfg.seed, hook=hook, checkpoint=ckpt)
            else:
                model.fit(data, seed=ctx.cfg.seed, hook=hook)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = score_directions(model, data, opts)
        t_eval = time.perf_counter() - t0
        metrics = flat_metrics(scores)
        used = rows_used(data)
        table = retrieval_table({name: metrics}, list(opts.ks))
        a, b = data.modalities
        sections = [
            "## Retrieval\n\n"
            f"I→T: {a} queries against the {b} database; T→I the reverse. Ranking: {model.ranking}"
            + (" (Hamming distance, ties by database index)" if model.ranking == "hamming" else " similarity")
            + "; relevant = at least one shared label; mAP over the whole ranking.\n\n" + table,
            "## Protocol\n\n" + "\n".join(f"- {n}" for n in data.protocol["notes"])
            + f"\n- training rows: {used['linked_pairs']} linked pairs, "
            + ", ".join(f"{v} unpaired {k.split('_', 1)[1]} rows" for k, v in used.items() if k != "linked_pairs")
            + f"\n- queries: {data.query.n(a)} {a}, {data.query.n(b)} {b}; database: {data.database.n(a)} {a}, "
            f"{data.database.n(b)} {b}",
        ]
        if ctx.out is not None and ctx.cfg.plots and pr_plot({name: scores}, ctx.out / "plots" / "pr.png",
                                                             f"{name}, seed {ctx.cfg.seed}"):
            sections.append("## Precision-recall\n\n![PR curves](plots/pr.png)")
        extra = {
            "retrieval": {
                "protocol": {k: v for k, v in data.protocol.items()},
                "ranking": model.ranking,
                "rows_used": used,
                "queries": {d: s.n_queries for d, s in scores.items()},
                "database": {d: s.n_database for d, s in scores.items()},
                "queries_without_relevant": {d: s.queries_without_relevant for d, s in scores.items()},
                "pr": {d: s.pr() for d, s in scores.items()},
            },
            "options": opts.to_dict(),
        }
        embeddings = {}
        for side, m in enumerate(data.modalities):
            embeddings[f"query_{m}"] = model.encode(data.query.rows[m].x, side).cpu().numpy()
            embeddings[f"query_{m}_id"] = np.asarray(data.query.rows[m].ids, dtype=str)
        return MethodResult(metrics={name: {"test": metrics}}, final_epoch=getattr(opts, "epochs", 1), extra=extra,
                            report_sections=sections, embeddings=embeddings,
                            timings={"fit": t_fit, "evaluate": t_eval}, table=table,
                            resumed=ckpt is not None and ckpt.resumed_at is not None)

    return run


for _name, _cls, _desc in (
    ("retrieval-cca", CCAOptions, "cross-modal retrieval: correlation matching (scikit-learn CCA on the linked "
                                  "training pairs), cosine ranking"),
    ("retrieval-hash", HashOptions, "cross-modal retrieval: supervised deep hashing with DCMH's objective on features "
                                    "(label-similarity likelihood, quantisation, bit balance; K = 16/32/64), "
                                    "Hamming ranking; learns from linked and unpaired rows"),
    ("retrieval-twotower", TwoTowerOptions, "cross-modal retrieval: two MLP towers, symmetric InfoNCE on the linked "
                                            "training pairs, cosine ranking"),
):
    register_method(Method(name=_name, run=make_run(_name), options_cls=_cls, description=_desc, clustering=False,
                           family="retrieval", check=check_retrieval, load=_load))
