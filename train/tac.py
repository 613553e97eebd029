"""TAC's and DXMC's clustering on an (image, text) store: ``concat-kmeans``, ``tac``, ``dxmc``.

TAC (Li et al., "Image Clustering with External Guidance", ICML 2024; XLearning-SCU/2024-ICML-TAC)
and DXMC (Zhang, Li, Huang, "Dual-Level Cross-Modal Contrastive Clustering", 2024;
Regan-Zhang/DXMC) cluster images with a retrieved text half (``[embed.text_source]``, embed.textspace).
Written from their code, not copied:

- ``concat-kmeans`` (TAC's training-free baseline, ``concat_kmeans.py``): spherical k-means
  (faiss's, 20 restarts, 300 iterations, trained on at most 256 rows per centre) on ``[u, v]``,
  both halves L2-normalised, fitted on the split it labels (TAC runs it on the test images).
- ``tac`` (``train_head.py``): two cluster heads, ``Linear(D, D) → BatchNorm → ReLU → Linear(D, K) →
  softmax`` (truncated-normal init, std 0.02), trained 20 epochs (Adam, lr 1e-3, betas (0.9, 0.99),
  batches of 512, drop_last) on ``L = L_dis + L_con − 5 (H_t + H_u)``:
  ``L_dis = CC(P_u, P_t(text neighbour)) + CC(P_t, P_u(image neighbour))`` (cluster-level
  contrast of the K assignment columns, τ̂ = 0.5; neighbours drawn at random from each row's 50
  nearest in its own modality), ``L_con`` = mean BCE of ``⟨P_t, P_u⟩`` against 1, ``H`` the entropy of
  the batch-mean assignment. An image is labelled by the image head's argmax.
- ``dxmc`` (``train_head_ours.py``): TAC's heads plus two instance heads ``Linear(D, D) → ReLU →
  Linear(D, 2D)`` (unnormalised outputs) and DXMC's instance-level cross-modal contrast between the
  text and image instance outputs of the same row (NT-Xent over 2B rows, raw dot product / 0.05);
  ``L = L_clu + L_ins − 5 (H_t + H_u)`` (the consistency term is computed but not added).

**Rows and broken pairs.** Every row of the benchmark store is an instance (as for DM2C): an image
row is labelled by the image head (concat-kmeans: by the image half of the centres), a text row by
the text head (the text half), a still-linked pair's two rows each by their own. The heads and
the concat k-means are *trained on the linked pairs* (a paired store: every row; after unpair
with ratio r: the 1 − r still linked), since every loss term needs both halves of a row; with no
linked training pair the methods refuse the store. The ``-image`` rows (``tac-image``, ...) are
TAC's own figure: image rows only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mixbench.config import Config, option
from mixbench.errors import ConfigError, DataError

from .data import BenchmarkData, SplitTensors
from .metrics import clustering_metrics
from .registry import Method, MethodResult, RunContext, register_method

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"  # the stage keeps an interrupted run folder that has checkpoints/last.pt
FORMAT = "mixbench-tac-checkpoint"


# -- options -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConcatKMeansOptions(Config):
    """``method = "concat-kmeans"``: TAC's training-free baseline."""

    section: ClassVar[str] = "train.method_options"
    restarts: int = option(20, "spherical k-means restarts (TAC: faiss nredo 20)", low=1)
    iters: int = option(300, "spherical k-means iterations (TAC: niter 300; stops early when nothing changes)", low=1)
    fit: str = option("per-split", "per-split: fitted on the split it labels (TAC, transductive); train: fitted on "
                                    "the training pairs, applied to every split", choices=("per-split", "train"))
    max_points_per_centre: int = option(256, "train on a random sample of k × this many rows when there are more "
                                             "(faiss's default, so TAC's); 0 = all", low=0)
    normalize: bool = option(True, "L2-normalise each half first (TAC)")
    image_modality: str = option("image", "the modality labelled as TAC labels images")


@dataclass(frozen=True)
class TacOptions(Config):
    """``method = "tac"``: TAC's cluster heads and losses (defaults: TAC's CIFAR/STL/ImageNet-10 settings)."""

    section: ClassVar[str] = "train.method_options"
    epochs: int = option(20, "training epochs (TAC: 20; 100 for UCF-101 / ImageNet-1K)", low=0)
    batch_size: int = option(512, "pairs per batch, drop_last (TAC: 512; 8192 for UCF-101 / ImageNet-1K)", low=2)
    lr: float = option(1e-3, "Adam learning rate (TAC: torch's default 1e-3)", low=0, low_open=True)
    betas: list[float] = option([0.9, 0.99], "Adam betas (TAC: 0.9, 0.99)", low=0, high=1, high_open=True)
    temperature: float = option(0.5, "cluster-level contrast temperature τ̂ (TAC: 0.5; 5.0 for many clusters)",
                                low=0, low_open=True)
    neighbours: int = option(50, "nearest neighbours per row in each modality, one drawn per step (TAC: 50)", low=1)
    entropy_weight: float = option(5.0, "weight of the batch-entropy term, subtracted (TAC: 5)", low=0)
    consistency_weight: float = option(1.0, "weight of the image-text consistency BCE (TAC: 1; DXMC: 0)", low=0)
    instance_weight: float = option(0.0, "weight of DXMC's instance-level cross-modal contrast (TAC: 0)", low=0)
    instance_temperature: float = option(0.05, "instance contrast temperature (DXMC: 0.05)", low=0, low_open=True)
    instance_dim: int = option(0, "instance head output width (0: 2 × input dim, DXMC's 1024 at 512)", low=0)
    normalize: bool = option(True, "L2-normalise the input features (TAC)")
    image_modality: str = option("image", "the modality whose head labels images")
    eval_every: int = option(1, "evaluate every N epochs (0: only the final epoch)", low=0)

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"[train] method_options.betas = {self.betas}: give two numbers, e.g. [0.9, 0.99].")


@dataclass(frozen=True)
class DxmcOptions(TacOptions):
    """``method = "dxmc"``: TAC's heads + DXMC's instance heads and instance-level contrast."""

    consistency_weight: float = option(0.0, "weight of the consistency BCE (DXMC computes it but does not add it)",
                                       low=0)
    instance_weight: float = option(1.0, "weight of the instance-level cross-modal contrast (DXMC: 1)", low=0)


# -- losses (written from the papers' code; tests/test_tac.py re-derives them in numpy) ----------
def cluster_contrastive(p: torch.Tensor, q: torch.Tensor, temperature: float) -> torch.Tensor:
    """TAC's cluster-level contrast of two (B, K) assignment matrices: the 2K columns are
    L2-normalised; column k of ``p`` and of ``q`` are positives, the other 2K − 2 negatives;
    cross-entropy summed over the 2K columns and divided by 2K."""
    k = p.shape[1]
    c = F.normalize(torch.cat([p.T, q.T]), dim=1)
    sim = c @ c.T / temperature
    sim = sim.masked_fill(torch.eye(2 * k, dtype=torch.bool, device=sim.device), float("-inf"))
    target = torch.cat([torch.arange(k, 2 * k), torch.arange(0, k)]).to(sim.device)
    return F.cross_entropy(sim, target, reduction="sum") / (2 * k)


def instance_contrastive(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float) -> torch.Tensor:
    """DXMC's instance-level contrast (NT-Xent): rows i of ``z_i`` and ``z_j`` are positives, the
    other 2B − 2 rows negatives, similarity = raw dot product / temperature; summed CE / 2B."""
    b = z_i.shape[0]
    z = torch.cat([z_i, z_j])
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target, reduction="sum") / (2 * b)


def consistency(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean BCE of ``⟨p_i, q_i⟩`` against 1 (TAC's consistency loss; log clamped at −100 as torch's BCE)."""
    return F.binary_cross_entropy((p * q).sum(dim=1), torch.ones(p.shape[0], device=p.device, dtype=p.dtype))


def batch_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of the batch-mean assignment (clamped at 1e-9)."""
    m = p.mean(dim=0).clamp(min=1e-9)
    return -(m * m.log()).sum()


# -- model ---------------------------------------------------------------------------------------
def _cluster_head(d: int, k: int) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, k), nn.Softmax(dim=1))
    nn.init.trunc_normal_(head[0].weight, std=0.02)
    nn.init.trunc_normal_(head[3].weight, std=0.02)
    return head


class Heads(nn.Module):
    """TAC's two cluster heads; with ``instance_dim`` DXMC's two instance heads too."""

    def __init__(self, d_text: int, d_image: int, k: int, instance_dim: int = 0) -> None:
        super().__init__()
        self.text = _cluster_head(d_text, k)
        self.image = _cluster_head(d_image, k)
        self.instance = instance_dim > 0
        if self.instance:
            self.text_ins = nn.Sequential(nn.Linear(d_text, d_text), nn.ReLU(), nn.Linear(d_text, instance_dim))
            self.image_ins = nn.Sequential(nn.Linear(d_image, d_image), nn.ReLU(), nn.Linear(d_image, instance_dim))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = (self.text(text), self.image(image))
        if self.instance:
            out = (*out, self.text_ins(text), self.image_ins(image))
        return out


def step_losses(model: Heads, opts: TacOptions, text: torch.Tensor, image: torch.Tensor, nb_text: torch.Tensor,
                nb_image: torch.Tensor) -> dict[str, torch.Tensor]:
    """One training step's loss terms (two forward passes in train mode, as TAC's loop)."""
    out = model(text, image)
    nb = model(nb_text, nb_image)
    p_t, p_u = out[0], out[1]
    terms = {
        "distill": cluster_contrastive(p_u, nb[0], opts.temperature) + cluster_contrastive(p_t, nb[1], opts.temperature),
        "consist": consistency(p_t, p_u),
        "entropy": batch_entropy(p_t) + batch_entropy(p_u),
    }
    if model.instance:
        terms["instance"] = instance_contrastive(out[2], out[3], opts.instance_temperature)
    loss = terms["distill"] + opts.consistency_weight * terms["consist"] - opts.entropy_weight * terms["entropy"]
    if model.instance:
        loss = loss + opts.instance_weight * terms["instance"]
    terms["loss"] = loss
    return terms


def nearest_neighbours(x: torch.Tensor, k: int, chunk_elems: int = 1 << 25) -> torch.Tensor:
    """(N, k) indices of each row's k highest inner products, after dropping the first of the
    k + 1 found (TAC: faiss IndexFlatIP search of k + 1, first column dropped as the row itself)."""
    n = x.shape[0]
    rows = max(1, chunk_elems // max(n, 1))
    out = torch.empty((n, k), dtype=torch.long, device=x.device)
    for a in range(0, n, rows):
        s = x[a : a + rows] @ x.T
        out[a : a + rows] = s.topk(k + 1, dim=1).indices[:, 1:]
    return out


# -- shared helpers ------------------------------------------------------------------------------
def _modalities(data: BenchmarkData, name: str) -> tuple[str, str]:
    if len(data.modalities) != 2:
        raise DataError(f"TAC-style methods need an (image, text) store; this one has {data.modalities}.")
    img = name if name in data.modalities else data.modalities[0]
    txt = next(m for m in data.modalities if m != img)
    return img, txt


def _prep(x: torch.Tensor, normalize: bool) -> torch.Tensor:
    return F.normalize(x, dim=1) if normalize else x


def _linked(s: SplitTensors, img: str, txt: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = s.linked()
    return (a, b) if s.modalities[0] == img else (b, a)


def _row_metrics(s: SplitTensors, pred: dict[str, np.ndarray], img: str, txt: str) -> tuple[dict[str, float], dict[str, float]]:
    """Metrics over every instance (image rows, then text rows) and over the image rows alone."""
    y = {m: s.y[m].cpu().numpy() for m in (img, txt)}
    every = clustering_metrics(np.concatenate([y[img], y[txt]]), np.concatenate([pred[img], pred[txt]]))
    return every, clustering_metrics(y[img], pred[img])


def check_linked(data: BenchmarkData, ctx: RunContext) -> None:
    img, txt = _modalities(data, getattr(ctx.options, "image_modality", "image"))
    a, _ = _linked(data.splits["train"], img, txt)
    if len(a) == 0:
        raise DataError(
            f"method {ctx.cfg.method}: the training split has no linked (image, text) pair, and every loss term needs "
            "both halves of a row; unpair with ratio < 1 (or train on the paired store), or use method dm2c."
        )
    opts = ctx.options
    if isinstance(opts, TacOptions):
        if len(a) < opts.batch_size:
            raise DataError(f"method {ctx.cfg.method}: {len(a)} linked training pairs, fewer than batch_size = "
                            f"{opts.batch_size} (batches drop the remainder, as TAC's); lower method_options.batch_size.")
        if opts.neighbours >= len(a):
            raise DataError(f"method {ctx.cfg.method}: neighbours = {opts.neighbours} needs more than that many linked "
                            f"training pairs ({len(a)}); lower method_options.neighbours.")
    elif len(a) < data.n_classes:
        raise DataError(f"method {ctx.cfg.method}: {len(a)} linked training pairs, fewer than the {data.n_classes} "
                        "clusters; unpair fewer pairs.")


# -- concat-kmeans ---------------------------------------------------------------------------------
def run_concat_kmeans(data: BenchmarkData, ctx: RunContext) -> MethodResult:
    from embed.textspace import spherical_kmeans

    opts = ctx.options
    assert isinstance(opts, ConcatKMeansOptions)
    img, txt = _modalities(data, opts.image_modality)
    k = ctx.cfg.n_clusters or data.n_classes
    t0 = time.perf_counter()

    def fit(s: SplitTensors, seed: int) -> torch.Tensor | None:
        a, b = _linked(s, img, txt)
        if len(a) < k:
            return None
        z = torch.cat([_prep(s.x[img][a], opts.normalize), _prep(s.x[txt][b], opts.normalize)], dim=1)
        _, centres = spherical_kmeans(z, k, iters=opts.iters, restarts=opts.restarts, seed=seed,
                                      max_points_per_centre=opts.max_points_per_centre, return_centres=True)
        return centres

    train_centres = fit(data.splits["train"], ctx.cfg.seed)
    assert train_centres is not None  # check_linked
    metrics: dict[str, dict[str, dict[str, float]]] = {"concat-kmeans": {}, "concat-kmeans-image": {}}
    fitted_on: dict[str, str] = {}
    for split, s in data.splits.items():
        centres = train_centres if split == "train" or opts.fit == "train" else fit(s, ctx.cfg.seed)
        fitted_on[split] = "train" if centres is train_centres else split
        if centres is None:
            log.info("concat-kmeans: split '%s' has fewer than %d linked pairs; using the train centres", split, k)
            centres, fitted_on[split] = train_centres, "train"
        d_img = s.x[img].shape[1]
        pred = {img: (_prep(s.x[img], opts.normalize) @ centres[:, :d_img].T).argmax(1),
                txt: (_prep(s.x[txt], opts.normalize) @ centres[:, d_img:].T).argmax(1)}
        a, b = _linked(s, img, txt)  # a linked pair's two rows: the concatenation's cluster
        if len(a):
            z = torch.cat([_prep(s.x[img][a], opts.normalize), _prep(s.x[txt][b], opts.normalize)], dim=1)
            joint = (z @ centres.T).argmax(1)
            pred[img][a] = joint
            pred[txt][b] = joint
        np_pred = {m: v.cpu().numpy() for m, v in pred.items()}
        metrics["concat-kmeans"][split], metrics["concat-kmeans-image"][split] = _row_metrics(s, np_pred, img, txt)
    if ctx.runlog is not None:
        ctx.runlog.append({"phase": "fit", "epoch": 0, **{f"{sp}_acc": metrics["concat-kmeans"][sp]["acc"]
                                                          for sp in data.splits}})
    return MethodResult(metrics=metrics, final_epoch=0, timings={"fit": time.perf_counter() - t0},
                        extra={"n_clusters": k, "fitted_on": fitted_on, "options": opts.to_dict()},
                        report_sections=[_rows_note("concat-kmeans", fitted_on)])


def _rows_note(name: str, fitted_on: dict[str, str] | None = None) -> str:
    text = (f"## Rows\n\n`{name}`: every instance of the split (image rows and text rows; a linked pair's rows "
            f"each count). `{name}-image`: the image rows only (TAC's figure).")
    if fitted_on:
        text += " Centres fitted on: " + ", ".join(f"{s} → {f}" for s, f in fitted_on.items()) + "."
    return text


# -- tac / dxmc ------------------------------------------------------------------------------------
def _checkpoint_state(ctx: RunContext, model: Heads, optim: torch.optim.Optimizer, gen: torch.Generator, epoch: int,
                      rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": FORMAT, "method": ctx.cfg.method, "options": ctx.options.to_dict(), "seed": ctx.cfg.seed,
            "n_clusters": ctx.cfg.n_clusters, "input_sha256": ctx.input_sha256, "epoch": epoch,
            "model": model.state_dict(), "optim": optim.state_dict(), "generator": gen.get_state(), "rows": rows}


def _load_checkpoint(ctx: RunContext) -> dict[str, Any] | None:
    if ctx.checkpoint_dir is None or not (ctx.checkpoint_dir / CHECKPOINT).is_file():
        return None
    from .checkpoint import read_verified

    path = ctx.checkpoint_dir / CHECKPOINT
    state = read_verified(path)
    want = {"format": FORMAT, "method": ctx.cfg.method, "options": ctx.options.to_dict(), "seed": ctx.cfg.seed,
            "n_clusters": ctx.cfg.n_clusters, "input_sha256": ctx.input_sha256}
    diffs = [f"{k}: {state.get(k)!r} (checkpoint) vs {v!r} (now)" for k, v in want.items() if state.get(k) != v]
    if diffs:
        raise ConfigError(f"{path}: checkpoint of another run; fields that differ: {'; '.join(diffs)}. Restore them to "
                          "resume, or rerun with overwrite (CLI: --overwrite).")
    return state


def run_tac(data: BenchmarkData, ctx: RunContext) -> MethodResult:
    from .dm2c import cpu_threads

    with cpu_threads(_threads(data, ctx)):
        return _run_tac(data, ctx)


def _threads(data: BenchmarkData, ctx: RunContext) -> int | None:
    """As DM2C's rule: ``[train] threads``, else one CPU thread for heads too small to split."""
    if ctx.device.type != "cpu":
        return None
    if ctx.cfg.threads:
        return ctx.cfg.threads
    opts = ctx.options
    assert isinstance(opts, TacOptions)
    k = ctx.cfg.n_clusters or data.n_classes
    macs = 2 * opts.batch_size * sum(d * d + d * k for d in data.dims.values())
    return 1 if macs < (1 << 24) else None


def _run_tac(data: BenchmarkData, ctx: RunContext) -> MethodResult:
    opts = ctx.options
    assert isinstance(opts, TacOptions)
    img, txt = _modalities(data, opts.image_modality)
    k = ctx.cfg.n_clusters or data.n_classes
    dev = ctx.device
    tr = data.splits["train"]
    a, b = _linked(tr, img, txt)
    u = _prep(tr.x[img][a], opts.normalize)
    v = _prep(tr.x[txt][b], opts.normalize)
    n = int(u.shape[0])
    t0 = time.perf_counter()
    nb_text, nb_image = nearest_neighbours(v, opts.neighbours), nearest_neighbours(u, opts.neighbours)
    t_mine = time.perf_counter() - t0

    torch.manual_seed(ctx.cfg.seed)  # nn.init draws from the global generator (as TAC's, unseeded there)
    inst = (opts.instance_dim or 2 * int(v.shape[1])) if opts.instance_weight > 0 else 0
    model = Heads(int(v.shape[1]), int(u.shape[1]), k, inst).to(dev)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, betas=(opts.betas[0], opts.betas[1]))
    gen = torch.Generator().manual_seed(ctx.cfg.seed)
    start, rows = 0, []
    state = _load_checkpoint(ctx)
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        gen.set_state(state["generator"])
        start, rows = int(state["epoch"]), list(state["rows"])
        log.info("%s: resuming after epoch %d from %s", ctx.cfg.method, start, ctx.checkpoint_dir)
        if ctx.runlog is not None:
            ctx.runlog.restore(rows)

    steps = n // opts.batch_size
    t1 = time.perf_counter()
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for epoch in range(start + 1, opts.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        pick_t = torch.randint(opts.neighbours, (n,), generator=gen)
        pick_u = torch.randint(opts.neighbours, (n,), generator=gen)
        perm, pick_t, pick_u = perm.to(dev), pick_t.to(dev), pick_u.to(dev)
        sums: dict[str, float] = {}
        for s in range(steps):
            idx = perm[s * opts.batch_size : (s + 1) * opts.batch_size]
            terms = step_losses(model, opts, v[idx], u[idx], v[nb_text[idx, pick_t[idx]]], u[nb_image[idx, pick_u[idx]]])
            optim.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optim.step()
            for name, val in terms.items():
                sums[name] = sums.get(name, 0.0) + float(val.detach())
        row: dict[str, Any] = {"phase": "train", "epoch": epoch, **{f"loss_{k_}": x / max(steps, 1) for k_, x in sums.items()}}
        last = epoch == opts.epochs
        if last or (opts.eval_every and epoch % opts.eval_every == 0):
            metrics = _evaluate(model, data, img, txt, opts.normalize, ctx.cfg.method)
            for split in data.splits:
                row[f"{split}_acc"] = metrics[ctx.cfg.method][split]["acc"]
                row[f"{split}_nmi"] = metrics[ctx.cfg.method][split]["nmi"]
        rows.append(row)
        if ctx.runlog is not None:
            ctx.runlog.append(row)
        if ctx.checkpoint_dir is not None:
            from .checkpoint import save_checkpoint  # header line with the sha256, atomic

            save_checkpoint(ctx.checkpoint_dir / CHECKPOINT, _checkpoint_state(ctx, model, optim, gen, epoch, rows))
    if not metrics:  # epochs = 0, or resumed at the end
        metrics = _evaluate(model, data, img, txt, opts.normalize, ctx.cfg.method)
    embeddings = _arrays(model, data, img, txt, opts.normalize)
    split_eval = "test" if "test" in data.splits else "train"
    view = {"embedding": embeddings[f"{split_eval}_embedding"], "y_true": embeddings[f"{split_eval}_label"],
            "y_pred": embeddings[f"{split_eval}_cluster"], "modality": embeddings[f"{split_eval}_modality"]}
    return MethodResult(
        metrics=metrics, final_epoch=opts.epochs, resumed=state is not None, embeddings=embeddings, plot_view=view,
        timings={"neighbours": t_mine, "train": time.perf_counter() - t1},
        extra={"n_clusters": k, "linked_train_pairs": n, "steps_per_epoch": steps, "options": opts.to_dict(),
               "instance_heads": bool(inst)},
        report_sections=[_rows_note(ctx.cfg.method)],
    )


@torch.no_grad()
def _probs(model: Heads, data: BenchmarkData, split: str, img: str, txt: str, normalize: bool) -> dict[str, torch.Tensor]:
    model.eval()
    s = data.splits[split]
    return {txt: model.text(_prep(s.x[txt], normalize)) if s.n(txt) else torch.zeros((0, 1), device=s.x[txt].device),
            img: model.image(_prep(s.x[img], normalize)) if s.n(img) else torch.zeros((0, 1), device=s.x[img].device)}


def _evaluate(model: Heads, data: BenchmarkData, img: str, txt: str, normalize: bool,
              name: str) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {name: {}, f"{name}-image": {}}
    for split, s in data.splits.items():
        p = _probs(model, data, split, img, txt, normalize)
        pred = {m: p[m].argmax(1).cpu().numpy() for m in (img, txt)}
        out[name][split], out[f"{name}-image"][split] = _row_metrics(s, pred, img, txt)
    return out


def _arrays(model: Heads, data: BenchmarkData, img: str, txt: str, normalize: bool) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for split, s in data.splits.items():
        p = _probs(model, data, split, img, txt, normalize)
        mods = [img, txt]
        arrays[f"{split}_embedding"] = torch.cat([p[m] for m in mods]).cpu().numpy()
        arrays[f"{split}_cluster"] = torch.cat([p[m].argmax(1) for m in mods]).cpu().numpy()
        arrays[f"{split}_label"] = torch.cat([s.y[m] for m in mods]).cpu().numpy()
        arrays[f"{split}_modality"] = np.concatenate([np.full(s.n(m), i) for i, m in enumerate(mods)])
        arrays[f"{split}_id"] = np.concatenate([np.asarray(s.ids[m], dtype=str) for m in mods])
    return arrays


register_method(Method(
    name="concat-kmeans", run=run_concat_kmeans, options_cls=ConcatKMeansOptions, check=check_linked,
    family="clustering",
    description="TAC's training-free baseline (Li et al., ICML 2024): spherical k-means on [image, retrieved text]; "
                "single rows by their own half of the centres",
))
register_method(Method(
    name="tac", run=run_tac, options_cls=TacOptions, check=check_linked, family="clustering",
    description="TAC (Li et al., ICML 2024): image and text cluster heads, cross-modal neighbour distillation, "
                "consistency and balance terms; trained on the linked pairs",
))
register_method(Method(
    name="dxmc", run=run_tac, options_cls=DxmcOptions, check=check_linked, family="clustering",
    description="DXMC (Zhang, Li, Huang 2024): TAC's heads + instance heads with an instance-level cross-modal "
                "contrastive term; trained on the linked pairs",
))
