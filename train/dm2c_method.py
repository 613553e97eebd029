"""``method = "dm2c"``: DM2C (faithful or a variant) as a method of the train stage.

Wraps the estimator (:class:`train.estimator.DM2C`): trains with checkpoints in the run folder
(resumed when compatible), and hands back the final-epoch metrics, the unified embeddings, the
per-modality diagnostics and the architecture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import BenchmarkData
from .dm2c import check_benchmark
from .estimator import DM2C
from .registry import Method, MethodResult, RunContext, register_method


def split_view(trainer: Any, ev: Any, split: str) -> dict[str, np.ndarray]:
    """Embedding, true labels, clusters and modality flags of ``split`` (rows in modality order)."""
    s = trainer.data.splits[split]
    return {
        "embedding": ev.embeddings[split].cpu().numpy(),
        "y_true": np.concatenate([s.y[m].cpu().numpy() for m in trainer.modalities]),
        "y_pred": ev.predictions[split],
        "modality": np.concatenate([np.full(s.n(m), i) for i, m in enumerate(trainer.modalities)]),
    }


def run_dm2c(data: BenchmarkData, ctx: RunContext) -> MethodResult:
    cfg = ctx.cfg
    model = DM2C(cfg).fit(data, checkpoint_dir=ctx.checkpoint_dir, runlog=ctx.runlog, input_sha256=ctx.input_sha256)
    ev, trainer = model.evaluation_, model.trainer_
    arrays: dict[str, np.ndarray] = {}
    for split in ev.embeddings:
        view = split_view(trainer, ev, split)
        s = trainer.data.splits[split]
        arrays[f"{split}_embedding"] = view["embedding"]
        arrays[f"{split}_label"] = view["y_true"]
        arrays[f"{split}_cluster"] = view["y_pred"]
        arrays[f"{split}_modality"] = view["modality"]
        arrays[f"{split}_id"] = np.concatenate([np.asarray(s.ids[m], dtype=str) for m in trainer.modalities])
    split_eval = "test" if "test" in ev.embeddings else "train"
    return MethodResult(
        metrics={"dm2c": ev.metrics},
        final_epoch=ev.epoch,
        extra={
            "epochs": cfg.epochs,
            "pretrain_epochs": cfg.pretrain_epochs,
            "n_clusters": trainer.n_clusters,
            "kmeans_seed": ev.kmeans_seed,
            "diagnostics": ev.diagnostics,
            "architecture": trainer.arch.to_dict(),
            "skipped_batches": trainer.skipped_batches,
            **trainer.method_facts(),
        },
        embeddings=arrays,
        timings=dict(model.timings_),
        resumed=model.resumed_,
        plot_view=split_view(trainer, ev, split_eval),
    )


def check_dm2c(data: BenchmarkData, ctx: RunContext) -> None:
    check_benchmark(data, ctx.cfg)


register_method(Method(
    name="dm2c",
    run=run_dm2c,
    check=check_dm2c,
    shared_dim=True,
    family="clustering",
    description="DM2C (Jiang et al., NeurIPS 2019): modality AEs, cross-modal cycle mappings, adversarial critics; "
                "faithful to the reference code by default, named variants beside it (`mixbench list variants`)",
))
