"""Run-folder outputs: the results tables, ``report.md`` and the plots.

The tables follow the DM2C paper's layout (algorithm | ACC | ARI | NMI | F-score | Precision |
Recall | Purity), one for the test split and one for the train split. Plots use matplotlib's
object API on the Agg canvas (no pyplot, no global backend switch); without matplotlib they are
skipped with one log line.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.store.manifest import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

COLUMNS = (("acc", "ACC"), ("ari", "ARI"), ("nmi", "NMI"), ("f_score", "F-score"),
           ("precision", "Precision"), ("recall", "Recall"), ("purity", "Purity"))
SPLITS = ("test", "train")
PLOTS_DIR = "plots"

Methods = Mapping[str, Mapping[str, Mapping[str, float]]]


def method_label(method: str, variant: str | None = None) -> str:
    return f"{method} ({variant})" if method == "dm2c" and variant else method


def results_table(methods: Methods, split: str, *, variant: str | None = None, digits: int = 4) -> str:
    """One markdown table: a row per method that has ``split``."""
    head = "| algorithm | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, rule]
    for method, per_split in methods.items():
        m = per_split.get(split)
        if not m or not any(k in m for k, _ in COLUMNS):  # e.g. a retrieval method's mAP rows
            continue
        cells = [f"{m[k]:.{digits}f}" if isinstance(m.get(k), (int, float)) else "–" for k, _ in COLUMNS]
        lines.append(f"| {method_label(method, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_tables(methods: Methods, *, variant: str | None = None) -> str:
    """The test table then the train table, each under a heading (what the CLI prints)."""
    parts = []
    for split in SPLITS:
        if any(split in v for v in methods.values()):
            parts.append(f"**{split}**\n\n{results_table(methods, split, variant=variant)}")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# report.md
# ---------------------------------------------------------------------------------------------


def write_report(
    run_dir: Path, payload: Mapping[str, Any], plots: Mapping[str, str], sections: Sequence[str] = ()
) -> Path:
    """``report.md``: results tables, run facts, the method's own ``sections``, warnings, plot links."""
    cfg = payload["config"]
    method = cfg.get("method", "dm2c")
    variant = cfg.get("variant") if method == "dm2c" else None
    wall = payload["wall_time"]
    if method == "dm2c":
        title = f"# DM2C run: {payload.get('dataset', '?')}"
        intro = (f"Final-epoch results (epoch {payload['final_epoch']}); k-means fitted on the train embeddings and "
                 "applied to the test rows; baselines are k-means on the input features of the same store.")
        facts = [
            f"- method: {method}, variant: {variant}, seed: {payload['seed']}",
            f"- schedule: {cfg.get('pretrain_epochs')} pre-training epochs per modality, {payload['epochs']} joint "
            f"epochs, batch {cfg.get('batch_size')}, gan {cfg.get('gan')}, critic every {cfg.get('critic_every')}",
            f"- architecture: {_arch_line(payload.get('architecture', {}))}",
            f"- skipped batches (a modality with fewer than 2 rows; BatchNorm cannot train on them): "
            f"{payload.get('skipped_batches', 0)}",
        ]
        if payload.get("anchor"):
            scores = payload.get("anchor_scores") or {}
            how = ("chosen without labels, " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items())
                   if scores else "set by variant_options.anchor")
            facts.append(f"- anchor modality: {payload['anchor']} ({how})")
    else:
        title = f"# {method} run: {payload.get('dataset', '?')}"
        intro = f"Final-epoch results (epoch {payload['final_epoch']})."
        opts = cfg.get("method_options") or {}
        facts = [f"- method: {method}, seed: {payload['seed']}",
                 "- options: " + (", ".join(f"{k} = {v!r}" for k, v in opts.items()) or "defaults")]
    tables = []
    if any(k in m for per_split in payload["methods"].values() for m in per_split.values() for k, _ in COLUMNS):
        for split in ("test", "train"):
            tables += [f"## {split.capitalize()}", "", results_table(payload["methods"], split, variant=variant), ""]
    lines = [
        title,
        "",
        intro,
        "",
        *tables,
        *[block for sec in sections for block in (sec, "")],
        "## Run",
        "",
        *facts,
        f"- device: {payload.get('device')}",
        f"- wall time: {wall['total']:.1f} s in all ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in wall.get("phases", {}).items()) + ")",
        f"- input: {payload['input'].get('path')} (manifest sha256 {str(payload['input'].get('manifest_sha256'))[:16]}…)",
        "- rows: " + "; ".join(f"{s}: " + ", ".join(f"{m} {n}" for m, n in r.items()) for s, r in payload["data"]["rows"].items()),
        f"- resumed from a checkpoint: {'yes' if payload.get('resumed') else 'no'}",
    ]
    diag = payload.get("diagnostics") or {}
    if diag:
        lines.append("- diagnostics (final epoch): " + ", ".join(f"{k} {v:.4f}" for k, v in diag.items()))
    lines += headroom_lines(payload)
    warnings = payload["data"].get("warnings") or []
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if plots:
        lines += ["", "## Plots", ""] + [f"- [{name}]({rel})" for name, rel in plots.items()]
    lines += ["", "Per-epoch losses and metrics: [epochs.csv](epochs.csv), [epochs.jsonl](epochs.jsonl). "
              "Full numbers, config and lineage: [metrics.json](metrics.json).", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def headroom_lines(payload: Mapping[str, Any]) -> list[str]:
    """The "Headroom" section of report.md (``payload["headroom"]``, from :mod:`train.headroom`)."""
    bounds = payload.get("headroom") or {}
    if not bounds:
        return []
    mods = list(payload.get("modalities") or [])
    head = [f"ACC {m} alone" for m in mods] + ["random alignment", "oracle alignment", "supervised (labels)", "DM2C"]
    intro = ("Each modality clustered alone (k-means on its train rows); the overall ACC when the modalities' "
             "clusters are joined at random and when they are matched with the labels; a supervised linear "
             "classifier per modality. Labels are used: for reading the result, not for choosing a model. "
             "See train/headroom.py.")
    lines = ["", "## Headroom", "", intro, "",
             "| split | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    dm2c = payload.get("methods", {}).get("dm2c", {})
    for split, b in bounds.items():
        cells = [f"{b[f'acc_{m}']:.4f}" if f"acc_{m}" in b else "–" for m in mods]
        cells += [f"{b[k]:.4f}" if k in b else "–" for k in ("aligned_random", "aligned_oracle", "supervised")]
        cells.append(f"{dm2c[split]['acc']:.4f}" if split in dm2c else "–")
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return lines


def _arch_line(arch: Mapping[str, Any]) -> str:
    if not arch:
        return "?"
    return (f"AEs {arch['dim']}→{arch['hiddens']}, mappings {arch['map_hiddens']}, "
            f"critics {arch['hiddens'][-1]}→{arch['critic_hidden']}→1, batchnorm {arch['batchnorm']}")


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def _figure(ncols: int, width: float = 5.0, height: float = 4.0) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    # fixed margins: matplotlib's layout engines (constrained, tight) measure every text several
    # times: 2.5 against 1.5 CPU-s per run folder's plots (6 repeats, machine B); figures whose
    # labels are data (class names) are cropped to their artists instead (_save(crop=True))
    fig = Figure(figsize=(width * ncols, height))
    fig.subplots_adjust(left=0.3 / ncols, right=0.98, bottom=0.12, top=0.92, wspace=0.3)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Any, path: Path, *, crop: bool = False) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if crop else None)
    atomic_write_bytes(path, buf.getvalue())


def make_plots(
    run_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    modalities: Sequence[str],
    classes: Sequence[str],
    test: Mapping[str, np.ndarray] | None,
) -> dict[str, str]:
    """Loss curves, metric curves, a 2-D PCA map of the unified test embeddings (by cluster and by
    modality) and the Hungarian-matched confusion matrix. Returns ``{title: relative path}``.

    ``test``: ``embedding`` (N×L), ``y_true``, ``y_pred``, ``modality`` (0/1) of the evaluated split."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.info("matplotlib is not installed; skipping the plots (pip install matplotlib)")
        return {}
    out = run_dir / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    if _loss_curves(rows, modalities, out / "losses.png"):
        made["loss curves"] = f"{PLOTS_DIR}/losses.png"
    if _metric_curves(rows, out / "metrics.png"):
        made["metric curves"] = f"{PLOTS_DIR}/metrics.png"
    if test is not None and len(test["y_true"]):
        _embedding_map(test, modalities, out / "embedding.png")
        made["test embeddings (PCA)"] = f"{PLOTS_DIR}/embedding.png"
        _confusion(test, classes, out / "confusion.png")
        made["confusion matrix (test, Hungarian-matched)"] = f"{PLOTS_DIR}/confusion.png"
    return made


def _series(rows: Sequence[Mapping[str, Any]], phase: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        if r.get("phase") == phase and isinstance(r.get(key), (int, float)):
            xs.append(int(r["epoch"]))
            ys.append(float(r[key]))
    return xs, ys


def _loss_curves(rows: Sequence[Mapping[str, Any]], modalities: Sequence[str], path: Path) -> bool:
    if not rows:
        return False
    fig, (ax0, ax1, ax2) = _figure(3)
    for m in modalities:
        xs, ys = _series(rows, f"pretrain-{m}", "rec")
        if xs:
            ax0.plot(xs, ys, label=m)
    ax0.set(title="AE pre-training: reconstruction MSE", xlabel="epoch", yscale="log")
    keys = ["loss_g"] + [f"{t}_{m}" for t in ("rec", "cyc", "cycrec") for m in modalities]
    for k in keys:
        xs, ys = _series(rows, "joint", k)
        if xs:
            ax1.plot(xs, ys, label=k)
    ax1.set(title="joint: generator losses", xlabel="epoch", yscale="log")
    for k in ("adv", "loss_d"):
        xs, ys = _series(rows, "joint", k)
        if xs:
            ax2.plot(xs, ys, label=k)
    ax2.set(title="joint: adversarial losses", xlabel="epoch")
    for ax in (ax0, ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    _save(fig, path)
    return True


def _metric_curves(rows: Sequence[Mapping[str, Any]], path: Path) -> bool:
    if not any("train_acc" in r for r in rows):
        return False
    fig, axes = _figure(3)
    for ax, metric in zip(axes, ("acc", "nmi", "ari")):
        for split in SPLITS:
            xs, ys = _series(rows, "joint", f"{split}_{metric}")
            if xs:
                ax.plot(xs, ys, label=split)
        ax.set(title=metric.upper(), xlabel="joint epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    _save(fig, path)
    return True


def _pca2(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.mean(axis=0, keepdims=True)
    if x.shape[1] < 2:
        return np.concatenate([x, np.zeros_like(x)], axis=1)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def _embedding_map(test: Mapping[str, np.ndarray], modalities: Sequence[str], path: Path) -> None:
    xy = _pca2(np.asarray(test["embedding"]))
    fig, (a, b) = _figure(2, 5.5, 5.0)
    sc = a.scatter(xy[:, 0], xy[:, 1], c=test["y_pred"], cmap="tab10", s=6)
    a.set(title="unified test embeddings, by cluster", xlabel="PC 1", ylabel="PC 2")
    fig.colorbar(sc, ax=a, label="cluster")
    for i, m in enumerate(modalities):
        sel = np.asarray(test["modality"]) == i
        b.scatter(xy[sel, 0], xy[sel, 1], s=6, label=m, alpha=0.7)
    b.set(title="unified test embeddings, by modality", xlabel="PC 1", ylabel="PC 2")
    b.legend()
    _save(fig, path)


def _confusion(test: Mapping[str, np.ndarray], classes: Sequence[str], path: Path) -> None:
    from .metrics import matched_confusion

    cm = matched_confusion(test["y_true"], test["y_pred"], classes=list(range(len(classes))))
    fig, (ax,) = _figure(1, 7.0, 6.0)
    im = ax.imshow(cm, cmap="Blues")
    names = list(classes) + [f"extra {j}" for j in range(cm.shape[1] - len(classes))]
    ax.set_xticks(range(cm.shape[1]), names[: cm.shape[1]], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(cm.shape[0]), list(classes), fontsize=7)
    ax.set(xlabel="matched cluster", ylabel="true class", title="test confusion after Hungarian matching")
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if cm[i, j] > top / 2 else "black")
    fig.colorbar(im, ax=ax)
    _save(fig, path, crop=True)
