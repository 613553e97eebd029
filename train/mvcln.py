"""Partially view-aligned clustering: MvCLN (Yang et al., CVPR 2021) and SURE (Yang et al., TPAMI 2022).

Both train two modality towers on the pairs still linked in the train split and use what the
unpairing left: the unlinked rows are *re-paired* (MvCLN, SURE on a ``decouple`` store) or, where the
other half is gone (``drop``/``zero`` stores), their missing half is *imputed* (SURE). Each pair (linked,
re-paired or imputed) is one point ``[h_a, h_b]`` for k-means (fitted on train, applied to test); every
row gets its pair's cluster, and the seven metrics score the rows as for every other method.

Faithful to the reference code (XLearning-SCU/2021-CVPR-MvCLN ``run.py``, ``models.py``,
``data_loader.py``, ``alignment.py``; XLearning-SCU/2022-TPAMI-SURE ``run.py``, ``models.py``,
``sure_inference.py``) by default:

- towers: Linear(d, 1024)–BN–ReLU–Dropout(0.2) ×3, then Linear(1024, 10)–BN–ReLU (the same for every
  dataset of the reference, only the input width differs); SURE adds decoders from ``[h_a, h_b]``:
  Linear(20, 1024)–ReLU–Dropout ×3 then Linear(1024, d), and the loss ``ncl + λ (MSE_a + MSE_b)``, λ 0.5;
- training pairs: every linked pair (positive) and, per linked a-row, ``neg_prop`` = 30 b-rows of
  other linked pairs drawn without replacement (negatives, *noisy*: some share the class), drawn once;
  shuffled every epoch, batches of 1024, the last incomplete batch dropped; Adam lr 1e-3, 80 epochs;
- the noise-robust contrastive loss on the Euclidean pair distance ``d``:
  positives ``d²``, negatives ``max(0, m − d)²`` until the mean negative distance of an epoch reaches
  ``switching_time × m``, then ``(1/m) max(0, √d (m − d))²``; mean over pairs / 2. Epoch 0 is a pass
  without updates (the towers in train mode, so BatchNorm statistics move) whose mean positive +
  negative distance, rounded, sets the margin ``m`` (at least 1);
- re-pairing (evaluation, towers in eval mode): the rows are put in a seeded random order and cut in
  chunks of 1024; within a chunk each a-row in turn takes the nearest b-row not yet taken (greedy).
  The reference re-pairs *all* rows, linked ones included (``realign_scope = "all"``); SURE first
  fills a missing half with the mean of the 3 nearest present rows of that modality (same chunk).

Named variants and options change single choices (``realign_scope = "unlinked"``: keep the links;
``realign_batch = 0``: one chunk per split; ``matching = "hungarian"``: optimal one-to-one matching;
``cluster_on``: what k-means sees). See :data:`VARIANTS`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mixbench.config import Config, option
from mixbench.errors import ConfigError, DataError, StoreError

from .checkpoint import read_verified, save_checkpoint
from .data import BenchmarkData, SplitTensors
from .kmeans import KMeans
from .metrics import clustering_metrics
from .registry import Method, MethodResult, RunContext, register_method
from .repairing import hidden_partners, repair_scores

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mixbench-mvcln-checkpoint"
CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------------------------

#: The names of :data:`VARIANTS` (defined below the options).
VARIANT_NAMES = ("faithful", "mvcln-plus", "mvcln-plus-cca", "linked-cca")


@dataclass(frozen=True)
class MvCLNOptions(Config):
    """``[train] method_options`` of ``mvcln`` and ``sure`` (defaults: the reference code)."""

    section: ClassVar[str] = "train.method_options"

    variant: str = option("faithful", "named variant (presets of the options below, see train.mvcln.VARIANTS); "
                                      "explicit options override the preset", choices=VARIANT_NAMES)
    epochs: int = option(80, "training epochs (after the margin pass, epoch 0)", low=0)
    batch_size: int = option(1024, "pairs per batch (the last incomplete batch is dropped)", low=2)
    lr: float = option(1e-3, "Adam learning rate", low=0, low_open=True)
    neg_prop: int = option(30, "negatives per linked a-row (b-rows of other linked pairs)", low=1)
    margin: float = option(5.0, "initial margin; any value but 1 is replaced after epoch 0 by the mean pos. + neg. "
                                "distance", low=0, low_open=True)
    robust: bool = option(True, "switch to the noise-robust negative term once the mean neg. distance reaches "
                                "switching_time x margin")
    switching_time: float = option(1.0, "the switch threshold, in margins", low=0)
    hiddens: list[int] = option([1024, 1024, 1024], "tower hidden widths", low=1)
    latent: int = option(10, "embedding width of each tower", low=1)
    dropout: float = option(0.2, "dropout after each hidden layer", low=0, high=1, high_open=True)
    lam: float = option(0.5, "SURE: weight of the reconstruction loss (mvcln ignores it)", low=0)
    k_fill: int = option(3, "imputation: a missing half is the mean of this many nearest present rows (SURE: 3)", low=1)
    unlinked: str = option("auto", "what to do with unlinked rows: 'realign' (re-pair one-to-one), 'impute' (fill the "
                                   "other half from the k_fill nearest rows of the other modality) or 'auto' (mvcln: "
                                   "realign; sure: realign on a decouple store, else impute)",
                           choices=("auto", "realign", "impute"))
    realign_scope: str = option("all", "rows re-paired at evaluation: 'all' (the reference: linked pairs too) or "
                                       "'unlinked' (keep the links)", choices=("all", "unlinked"))
    realign_batch: int = option(1024, "rows per re-pairing chunk (0: the whole split at once)", low=0)
    matching: str = option("greedy", "one-to-one matching in a chunk: 'greedy' (the reference) or 'hungarian'",
                           choices=("greedy", "hungarian"))
    cluster_on: str = option("embedding", "what k-means clusters per pair: 'embedding' ([h_a, h_b], the reference), "
                                          "'input' (the pair's standardized input features) or 'both'",
                             choices=("embedding", "input", "both"))
    neighbours: str = option("towers", "the space in which unlinked rows find their partner / neighbours of the other "
                                       "modality: 'towers' (the reference), 'cca' (a linear CCA of the linked train "
                                       "pairs, cca_dim components) or 'both' (side by side, each block scaled to unit "
                                       "mean std)", choices=("towers", "cca", "both"))
    cca_dim: int = option(10, "CCA components for neighbours 'cca'/'both' (at most the smaller dim and links - 1)", low=1)
    n_init: int = option(10, "k-means restarts (the reference: scikit-learn's 10)", low=1)
    precision: str = option("fp32", "training arithmetic: 'fp32' (the reference) or 'bf16' (bfloat16 autocast of the "
                                    "towers' matrix products, fp32 weights, loss and fused Adam; evaluation stays fp32; "
                                    "fast where the processor has bf16 units: AMX CPUs, recent GPUs)",
                             choices=("fp32", "bf16"))
    dropout_masks: str = option("torch", "dropout masks: 'torch' (nn.Dropout, the reference's draws) or 'bits' (the "
                                         "same keep probability within 8e-6, from 16 random bits per element: ~6x cheaper "
                                         "to draw on a CPU; other masks than the reference's)",
                                choices=("torch", "bits"))
    eval_every: int = option(0, "also evaluate (re-pair + k-means + metrics) every N epochs; 0: final epoch only", low=0)
    checkpoint_every: int = option(20, "checkpoint every N epochs (0: only at the end)", low=0)


_PLUS = {"unlinked": "impute", "k_fill": 10, "realign_batch": 0, "cluster_on": "input"}

#: Named variants: presets applied under the explicit options (``variant = "faithful"`` changes nothing).
VARIANTS: dict[str, dict[str, Any]] = {
    "faithful": {},
    # Ours: the towers only choose neighbours. The links the store still has are kept; every unlinked row
    # is its own point, its missing half the mean of its 10 nearest rows of the other modality (tower
    # distance, whole split), and k-means sees standardized *input* features, not the 10-d embeddings.
    "mvcln-plus": _PLUS,
    # Ours: mvcln-plus with neighbours found in the towers' embedding and a linear CCA of the linked
    # pairs side by side (the CCA holds where few links leave the towers weak).
    "mvcln-plus-cca": _PLUS | {"neighbours": "both"},
    # Ours, linear: mvcln-plus's imputation with neighbours from the CCA alone; the towers are not used
    # (epochs 0: only the margin pass runs). The family's re-pairing machinery without deep training.
    "linked-cca": _PLUS | {"neighbours": "cca", "epochs": 0},
}


assert tuple(VARIANTS) == VARIANT_NAMES


def resolved(opts: MvCLNOptions, given: dict[str, Any] | None = None) -> MvCLNOptions:
    """The options with the variant's preset under the explicitly ``given`` keys."""
    preset = {k: v for k, v in VARIANTS[opts.variant].items() if given is None or k not in given}
    return opts.replace(**preset) if preset else opts


# ---------------------------------------------------------------------------------------------
# model and loss
# ---------------------------------------------------------------------------------------------


class BitsDropout(nn.Module):
    """Inverted dropout like :class:`torch.nn.Dropout`, its keep mask drawn as 16-bit integers from
    the global generator (``torch.randint``, 4 per 64-bit draw) compared with ``round((1 - p) 2¹⁶)``:
    keep probability within 2⁻¹⁷ of ``1 - p``. A CPU draws these about 6x faster than the
    Bernoulli floats of ``nn.Dropout`` (1,024 x 1,024: about 1.2 ms against 8 ms), which were a third of
    a faithful MvCLN step there. Resume stays exact: the global generator is checkpointed."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.threshold = round((1.0 - self.p) * 65536) - 32768  # keep where the signed 16-bit draw is below

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        keep = words.view(torch.int16)[:n].view(x.shape) < self.threshold
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _dropout(p: float, masks: str) -> nn.Module:
    return BitsDropout(p) if masks == "bits" else nn.Dropout(p)


def tower(d_in: int, hiddens: list[int], latent: int, dropout: float, masks: str = "torch") -> nn.Sequential:
    """The reference encoder: [Linear–BN–ReLU–Dropout] per hidden width, then Linear–BN–ReLU to ``latent``
    (``masks = "bits"``: :class:`BitsDropout` instead of ``nn.Dropout``)."""
    layers: list[nn.Module] = []
    prev = d_in
    for h in hiddens:
        layers += [nn.Linear(prev, h), nn.BatchNorm1d(h), nn.ReLU(True), _dropout(dropout, masks)]
        prev = h
    layers += [nn.Linear(prev, latent), nn.BatchNorm1d(latent), nn.ReLU(True)]
    return nn.Sequential(*layers)


def decoder(d_in: int, hiddens: list[int], d_out: int, dropout: float, masks: str = "torch") -> nn.Sequential:
    """SURE's decoder: [Linear–ReLU–Dropout] per hidden width, then Linear to ``d_out``."""
    layers: list[nn.Module] = []
    prev = d_in
    for h in hiddens:
        layers += [nn.Linear(prev, h), nn.ReLU(), _dropout(dropout, masks)]
        prev = h
    layers.append(nn.Linear(prev, d_out))
    return nn.Sequential(*layers)


class TwoTowers(nn.Module):
    """The two modality encoders (encoder0/encoder1 as in the reference), SURE's decoders when ``decoders``."""

    def __init__(self, d_a: int, d_b: int, hiddens: list[int], latent: int, dropout: float, decoders: bool,
                 masks: str = "torch") -> None:
        super().__init__()
        self.encoder0 = tower(d_a, hiddens, latent, dropout, masks)
        self.encoder1 = tower(d_b, hiddens, latent, dropout, masks)
        self.decoders = decoders
        if decoders:
            self.decoder0 = decoder(2 * latent, hiddens, d_a, dropout, masks)
            self.decoder1 = decoder(2 * latent, hiddens, d_b, dropout, masks)

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ha, hb = self.encoder0(xa), self.encoder1(xb)
        if not self.decoders:
            return ha, hb
        union = torch.cat([ha, hb], 1)
        return ha, hb, self.decoder0(union), self.decoder1(union)


def noise_robust_loss(dist: torch.Tensor, positive: torch.Tensor, margin: float, fine: bool) -> torch.Tensor:
    """MvCLN's loss over pair distances ``dist`` with 0/1 ``positive`` labels (module doc)."""
    p = positive.to(dist.dtype)
    if fine:
        neg = (1.0 / margin) * torch.clamp(dist.sqrt() * (margin - dist), min=0.0) ** 2
    else:
        neg = torch.clamp(margin - dist, min=0.0) ** 2
    return (p * dist * dist + (1 - p) * neg).sum() / (2.0 * len(p))


def training_pairs(n_linked: int, neg_prop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs into the linked pairs: ``(i, j, positive)``; positives first (i, i), then per
    anchor ``i`` its ``neg_prop`` negatives ``j`` drawn without replacement from all linked pairs
    (the reference's ``random.sample(range(n), neg_prop)``: ``j = i`` may be drawn, labelled negative)."""
    k = min(neg_prop, n_linked)
    neg = np.stack([rng.choice(n_linked, size=k, replace=False) for _ in range(n_linked)]) if n_linked else np.zeros((0, k), int)
    i = np.concatenate([np.arange(n_linked), np.repeat(np.arange(n_linked), k)])
    j = np.concatenate([np.arange(n_linked), neg.reshape(-1)])
    pos = np.concatenate([np.ones(n_linked, np.int64), np.zeros(n_linked * k, np.int64)])
    return i.astype(np.int64), j.astype(np.int64), pos


def euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The reference's distance matrix: ``sqrt(max(|x|² + |y|² − 2 x·y, 1e-12))``."""
    xx = (x * x).sum(1, keepdim=True)
    yy = (y * y).sum(1, keepdim=True).t()
    return torch.addmm(xx + yy, x, y.t(), beta=1, alpha=-2).clamp(min=1e-12).sqrt()


def _mean_std(x: torch.Tensor) -> float:
    return float(x.std(0).mean().clamp(min=1e-8)) if len(x) > 1 else 1.0


class LinkedCCA:
    """Linear CCA of the linked pairs ``(xa[i], xb[i])`` (float64, each input dimension standardized on the
    pairs, covariances ridged by ``ridge`` x identity): ``transform`` projects each modality's rows onto the
    first ``dim`` canonical directions (fewer where the dims or the pairs allow fewer), each scaled by its
    canonical correlation, so a row and its partner land close and weakly shared directions count less."""

    def __init__(self, xa: torch.Tensor, xb: torch.Tensor, dim: int, ridge: float = 1e-3) -> None:
        self.dim = max(1, min(dim, xa.shape[1], xb.shape[1], len(xa) - 1))
        za, zb = xa.double().cpu(), xb.double().cpu()
        self.mean_a, self.mean_b = za.mean(0), zb.mean(0)
        self.std_a, self.std_b = za.std(0).clamp(min=1e-12), zb.std(0).clamp(min=1e-12)
        za, zb = (za - self.mean_a) / self.std_a, (zb - self.mean_b) / self.std_b
        n = max(len(za) - 1, 1)

        def inv_sqrt(c: torch.Tensor) -> torch.Tensor:
            w, v = torch.linalg.eigh(c + ridge * torch.eye(len(c), dtype=c.dtype))
            return v @ torch.diag(w.clamp(min=1e-12).rsqrt()) @ v.T

        wa, wb = inv_sqrt(za.T @ za / n), inv_sqrt(zb.T @ zb / n)
        u, rho, vt = torch.linalg.svd(wa @ (za.T @ zb / n) @ wb)
        self.rho = rho[:self.dim]
        self.rot_a = wa @ u[:, :self.dim] * self.rho
        self.rot_b = wb @ vt.T[:, :self.dim] * self.rho

    def transform(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def project(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
            z = (x.double().cpu() - mean) / std @ rot
            return z.to(torch.float32).to(x.device)

        return (project(xa, self.mean_a, self.std_a, self.rot_a), project(xb, self.mean_b, self.std_b, self.rot_b))


def greedy_match(dist: torch.Tensor) -> torch.Tensor:
    """Row ``i`` in order takes the nearest column not yet taken (the reference's re-alignment)."""
    c = dist.clone()
    out = torch.empty(len(c), dtype=torch.long, device=c.device)
    for i in range(len(c)):
        j = torch.argmin(c[i])
        out[i] = j
        c[:, j] = float("inf")
    return out


def hungarian_match(dist: torch.Tensor) -> torch.Tensor:
    from scipy.optimize import linear_sum_assignment

    _, cols = linear_sum_assignment(dist.double().cpu().numpy())
    return torch.as_tensor(cols, device=dist.device)


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------


@dataclass
class Slots:
    """One split arranged for clustering: slot k pairs a-row ``a[k]`` with b-row ``b[k]`` (-1: that
    half is imputed); ``fill_a``/``fill_b`` hold the imputed embeddings where a half is missing."""

    a: np.ndarray
    b: np.ndarray
    repaired: np.ndarray  # bool per slot: the method chose this pairing
    nbr_a: np.ndarray  # (slots, k_fill) a-rows averaged into an imputed a half (-1: none)
    nbr_b: np.ndarray
    dist: list[tuple[np.ndarray, np.ndarray, torch.Tensor]]  # per chunk (a rows, b pool, distances), re-paired rows only


class PartialAlignment:
    """Trains MvCLN (``sure=False``) or SURE on a benchmark and evaluates it (module doc)."""

    def __init__(self, data: BenchmarkData, opts: MvCLNOptions, *, seed: int, device: torch.device, sure: bool,
                 n_clusters: int = 0) -> None:
        self.data, self.opts, self.seed, self.device, self.sure = data, opts, seed, device, sure
        self.n_clusters = n_clusters or data.n_classes  # k of k-means (0: the number of classes)
        self.a, self.b = data.modalities[:2]
        tr = data.splits["train"]
        torch.manual_seed(seed)
        self.model = TwoTowers(int(tr.x[self.a].shape[1]), int(tr.x[self.b].shape[1]), list(opts.hiddens), opts.latent,
                               opts.dropout, decoders=sure, masks=opts.dropout_masks).to(device)
        # bf16: the fused Adam kernel (one pass over the weights; results within an ulp of the per-tensor loop)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts.lr, fused=True if opts.precision == "bf16" else None)
        self.gen = torch.Generator().manual_seed(seed)
        ia, ib = tr.linked()
        self.ia, self.ib = ia.to(device), ib.to(device)
        rng = np.random.default_rng(seed)
        i, j, pos = training_pairs(len(ia), opts.neg_prop, rng)
        self.pi = torch.as_tensor(i, device=device)
        self.pj = torch.as_tensor(j, device=device)
        self.pos = torch.as_tensor(pos, device=device)
        self.margin = float(opts.margin)
        self._cca: LinkedCCA | None = None
        self.fine = False
        self.epoch = -1  # epochs done (0 = the margin pass)
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0

    # -- training --------------------------------------------------------------------------
    def batches(self) -> list[torch.Tensor]:
        n = len(self.pos)
        bs = min(self.opts.batch_size, n)
        order = torch.randperm(n, generator=self.gen).to(self.device)
        return [order[s:s + bs] for s in range(0, n - bs + 1, bs)]

    def batch_loss(self, idx: torch.Tensor, margin: float, fine: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tr = self.data.splits["train"]
        xa = tr.x[self.a][self.ia[self.pi[idx]]]
        xb = tr.x[self.b][self.ib[self.pj[idx]]]
        lab = self.pos[idx]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.opts.precision == "bf16"):
            out = self.model(xa, xb)
        out = tuple(o.float() for o in out)
        dist = F.pairwise_distance(out[0], out[1])
        loss = noise_robust_loss(dist, lab, margin, fine)
        parts = {"ncl": loss.detach()}
        if self.sure:
            ver = F.mse_loss(xa, out[2]) + F.mse_loss(xb, out[3])
            loss = loss + self.opts.lam * ver
            parts["ver"] = ver.detach()
        parts["pos_sum"] = dist.detach()[lab == 1].sum()
        parts["neg_sum"] = dist.detach()[lab == 0].sum()
        parts["pos_n"] = (lab == 1).sum()
        parts["neg_n"] = (lab == 0).sum()
        return loss, parts

    def run_epoch(self) -> dict[str, Any]:
        """One epoch (the first call: the margin pass, no updates)."""
        epoch = self.epoch + 1
        self.model.train()
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        batches = self.batches()
        for idx in batches:
            with torch.set_grad_enabled(epoch > 0):
                loss, parts = self.batch_loss(idx, self.margin, self.fine)
            if epoch > 0:
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
            parts["loss"] = loss.detach()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0) + v
        nb = max(len(batches), 1)
        pos_d = float(sums["pos_sum"] / sums["pos_n"]) if batches and int(sums["pos_n"]) else float("nan")
        neg_d = float(sums["neg_sum"] / sums["neg_n"]) if batches and int(sums["neg_n"]) else float("nan")
        row: dict[str, Any] = {"phase": self.method_name, "epoch": epoch, "loss": float(sums.get("loss", 0)) / nb,
                               "ncl_loss": float(sums.get("ncl", 0)) / nb, "pos_dist": pos_d, "neg_dist": neg_d,
                               "margin": self.margin, "fine": self.fine}
        if self.sure:
            row["ver_loss"] = float(sums.get("ver", 0)) / nb
        if epoch > 0 and self.opts.robust and not self.fine and neg_d >= self.opts.switching_time * self.margin:
            self.fine = True
            log.info("%s: mean negative distance %.3f >= %g x margin; the robust term is on from epoch %d",
                     self.method_name, neg_d, self.opts.switching_time, epoch + 1)
        if epoch == 0 and self.margin != 1.0 and math.isfinite(pos_d + neg_d):
            self.margin = float(max(1, round(pos_d + neg_d)))
            log.info("%s: margin = %g", self.method_name, self.margin)
        self.train_seconds += time.perf_counter() - t0
        row["seconds"] = time.perf_counter() - t0
        self.epoch = epoch
        self.history.append(row)
        return row

    @property
    def method_name(self) -> str:
        return "sure" if self.sure else "mvcln"

    # -- checkpoints -----------------------------------------------------------------------
    def state(self, config: dict[str, Any], input_sha256: str) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "method": self.method_name,
            "config": config, "input_sha256": input_sha256,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.zeros(0, dtype=torch.uint8),
            "margin": self.margin, "fine": self.fine, "epoch": self.epoch,
            "history": self.history, "train_seconds": self.train_seconds,
        }

    def save(self, path: Path, config: dict[str, Any], input_sha256: str) -> None:
        """Atomically, behind the sha256 header of every mixbench checkpoint (:mod:`train.checkpoint`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, self.state(config, input_sha256))

    def restore(self, path: Path, config: dict[str, Any], input_sha256: str) -> None:
        state = read_verified(path, self.device)  # a damaged or foreign file: StoreError naming it and the fix
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
            raise StoreError(f"{path}: not a mixbench {self.method_name} checkpoint of version {CHECKPOINT_VERSION}; "
                             "delete it or rerun with overwrite.")
        saved = state.get("config", {})
        diffs = [f"{k}: {saved.get(k, '<absent>')!r} (checkpoint) vs {config.get(k, '<absent>')!r} (now)"
                 for k in sorted(set(saved) | set(config)) if saved.get(k) != config.get(k)]
        if state.get("method") != self.method_name or diffs:
            raise ConfigError(f"{path}: checkpoint of another config (method {state.get('method')!r}"
                              f"{'; ' + '; '.join(diffs) if diffs else ''}); rerun with overwrite (CLI: --overwrite) "
                              "or use another output folder.")
        if input_sha256 and state.get("input_sha256") and state["input_sha256"] != input_sha256:
            raise DataError(f"{path}: checkpoint trained on another input store; rerun with overwrite.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["gen"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())  # dropout draws from the global generator
        if self.device.type == "cuda" and len(state["cuda_rng"]):
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.margin, self.fine, self.epoch = float(state["margin"]), bool(state["fine"]), int(state["epoch"])
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def tower_embed(self, split: SplitTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """The towers' embeddings of every row of ``split`` (eval mode, fp32)."""
        self.model.eval()
        chunk = 8192
        ha = torch.cat([self.model.encoder0(split.x[self.a][s:s + chunk]) for s in range(0, split.n(self.a), chunk)]) \
            if split.n(self.a) else torch.zeros(0, self.opts.latent, device=self.device)
        hb = torch.cat([self.model.encoder1(split.x[self.b][s:s + chunk]) for s in range(0, split.n(self.b), chunk)]) \
            if split.n(self.b) else torch.zeros(0, self.opts.latent, device=self.device)
        return ha, hb

    def cca(self) -> LinkedCCA:
        """The CCA of the linked train pairs (fitted once: it depends only on the data)."""
        if self._cca is None:
            tr = self.data.splits["train"]
            self._cca = LinkedCCA(tr.x[self.a][self.ia], tr.x[self.b][self.ib], self.opts.cca_dim)
        return self._cca

    @torch.no_grad()
    def embed(self, split: SplitTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """The space in which rows find their other-modality partners and neighbours (``neighbours``):
        the towers' embeddings, the linked-pair CCA, or both side by side, each block divided by its mean
        per-dimension standard deviation on the train split (so neither outweighs the other)."""
        space = self.opts.neighbours
        if space == "towers":
            return self.tower_embed(split)
        pa, pb = self.cca().transform(split.x[self.a], split.x[self.b])
        if space == "cca":
            return pa, pb
        ha, hb = self.tower_embed(split)
        tr = self.data.splits["train"]
        ta, tb = self.tower_embed(tr) if split is not tr else (ha, hb)
        ca, cb = self.cca().transform(tr.x[self.a], tr.x[self.b]) if split is not tr else (pa, pb)
        return (torch.cat([ha / _mean_std(ta), pa / _mean_std(ca)], 1),
                torch.cat([hb / _mean_std(tb), pb / _mean_std(cb)], 1))

    def unlinked_mode(self) -> str:
        return unlinked_mode(self.data, self.opts, self.sure)

    @torch.no_grad()
    def arrange(self, split: SplitTensors, ha: torch.Tensor, hb: torch.Tensor, gen: torch.Generator) -> tuple[Slots, torch.Tensor, torch.Tensor]:
        """Pair the rows of ``split`` (module doc): slots and the per-slot embeddings ``(e_a, e_b)``."""
        opts = self.opts
        ia, ib = (t.cpu().numpy() for t in split.linked())
        na, nb = split.n(self.a), split.n(self.b)
        ua = np.setdiff1d(np.arange(na), ia)
        ub = np.setdiff1d(np.arange(nb), ib)
        mode = self.unlinked_mode()
        if mode == "realign":
            if len(ua) != len(ub):
                raise DataError(unequal_message(self.method_name, len(ua), len(ub), self.a, self.b))
            ub_shuffled = ub[torch.randperm(len(ub), generator=gen).numpy()]
            a_all = np.concatenate([ia, ua])
            b_all = np.concatenate([ib, ub_shuffled])
            free = np.concatenate([np.full(len(ia), opts.realign_scope == "all"), np.ones(len(ua), bool)])
        else:  # impute: linked pairs, then a-only rows, then b-only rows
            a_all = np.concatenate([ia, ua, np.full(len(ub), -1)])
            b_all = np.concatenate([ib, np.full(len(ua), -1), ub])
            free = np.zeros(len(a_all), bool)
        n = len(a_all)
        order = torch.randperm(n, generator=gen).numpy()
        a_all, b_all, free = a_all[order], b_all[order], free[order]
        chunk = opts.realign_batch or max(n, 1)
        if opts.realign_scope == "unlinked" and mode == "realign":
            # keep the links; chunks run over the unlinked slots only
            fixed = np.flatnonzero(~free)
            movable = np.flatnonzero(free)
            groups = [movable[s:s + chunk] for s in range(0, len(movable), chunk)] + [fixed[s:s + chunk] for s in range(0, len(fixed), chunk)]
        else:
            groups = [np.arange(s, min(s + chunk, n)) for s in range(0, n, chunk)]
        ea = torch.zeros(n, ha.shape[1], device=self.device)
        eb = torch.zeros(n, hb.shape[1], device=self.device)
        new_b = b_all.copy()
        nbr_a = np.full((n, opts.k_fill), -1, dtype=np.int64)
        nbr_b = np.full((n, opts.k_fill), -1, dtype=np.int64)
        dists: list[tuple[np.ndarray, np.ndarray, torch.Tensor]] = []
        for g in groups:
            ga, gb, gf = a_all[g], b_all[g], free[g]
            if mode == "impute":
                xa = ha[torch.as_tensor(np.where(ga >= 0, ga, 0), device=self.device)]
                xb = hb[torch.as_tensor(np.where(gb >= 0, gb, 0), device=self.device)]
                has_a = torch.as_tensor(ga >= 0, device=self.device)
                has_b = torch.as_tensor(gb >= 0, device=self.device)
                ra, rb = xa.clone(), xb.clone()
                if (~has_b).any() and has_b.any():
                    d = euclidean(xa[~has_b], xb[has_b])
                    k = min(opts.k_fill, int(has_b.sum()))
                    nn_idx = d.argsort(dim=1)[:, :k]
                    rb[~has_b] = xb[has_b][nn_idx].sum(1) / opts.k_fill
                    nbr_b[g[gb < 0], :k] = gb[gb >= 0][nn_idx.cpu().numpy()]
                if (~has_a).any() and has_a.any():
                    d = euclidean(xb[~has_a], xa[has_a])
                    k = min(opts.k_fill, int(has_a.sum()))
                    nn_idx = d.argsort(dim=1)[:, :k]
                    ra[~has_a] = xa[has_a][nn_idx].sum(1) / opts.k_fill
                    nbr_a[g[ga < 0], :k] = ga[ga >= 0][nn_idx.cpu().numpy()]
                ea[torch.as_tensor(g, device=self.device)] = ra
                eb[torch.as_tensor(g, device=self.device)] = rb
                continue
            ta = torch.as_tensor(ga, device=self.device)
            xa = ha[ta]
            if gf.all():
                tb = torch.as_tensor(gb, device=self.device)
                d = euclidean(xa, hb[tb])
                cols = (greedy_match(d) if opts.matching == "greedy" else hungarian_match(d)).cpu().numpy()
                new_b[g] = gb[cols]
                dists.append((ga, gb, d))
            ea[torch.as_tensor(g, device=self.device)] = xa
            eb[torch.as_tensor(g, device=self.device)] = hb[torch.as_tensor(new_b[g], device=self.device)]
        slots = Slots(a=a_all, b=new_b, repaired=free.copy(), dist=dists, nbr_a=nbr_a, nbr_b=nbr_b)
        return slots, ea, eb

    def features(self, split: SplitTensors, slots: Slots, ea: torch.Tensor, eb: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
        """What k-means clusters per slot (``cluster_on``); input features standardized with train statistics."""
        parts = []
        if self.opts.cluster_on in ("embedding", "both"):
            parts.append(torch.cat([ea, eb], 1))
        if self.opts.cluster_on in ("input", "both"):
            for m, rows, nbr in ((self.a, slots.a, slots.nbr_a), (self.b, slots.b, slots.nbr_b)):
                x = split.x[m]
                mu, sd = stats[m]
                xs = (x - mu) / sd
                val = torch.zeros(len(rows), x.shape[1], device=self.device)
                have = rows >= 0
                if have.any():
                    val[torch.as_tensor(have, device=self.device)] = xs[torch.as_tensor(rows[have], device=self.device)]
                fill = ~have & (nbr[:, 0] >= 0)
                if fill.any():  # an imputed half: the mean of its neighbours' inputs (as for the embedding)
                    nb = torch.as_tensor(nbr[fill], device=self.device)
                    ok = (nb >= 0).unsqueeze(-1).to(xs.dtype)
                    val[torch.as_tensor(fill, device=self.device)] = (xs[nb.clamp(min=0)] * ok).sum(1) / self.opts.k_fill
                parts.append(val / math.sqrt(x.shape[1]))
            if self.opts.cluster_on == "both":
                parts[0] = parts[0] / parts[0].std(0).clamp(min=1e-8).mean() / math.sqrt(parts[0].shape[1])
        return torch.cat(parts, 1)

    def evaluate(self) -> dict[str, Any]:
        """Re-pair / impute every split, cluster the pairs (k-means fitted on train), score the rows."""
        data, opts = self.data, self.opts
        gen = torch.Generator().manual_seed(self.seed + 1)
        tr = data.splits["train"]
        stats = {m: (tr.x[m].mean(0), tr.x[m].std(0).clamp(min=1e-8)) for m in (self.a, self.b)}
        arranged = {}
        for name, split in data.splits.items():
            ha, hb = self.embed(split)
            slots, ea, eb = self.arrange(split, ha, hb, gen)
            arranged[name] = (split, slots, ea, eb, self.features(split, slots, ea, eb, stats))
        km = KMeans(self.n_clusters, n_init=opts.n_init, seed=self.seed, device=self.device).fit(arranged["train"][4])
        out: dict[str, Any] = {"metrics": {}, "pairs": {}, "slots": {}, "views": {}, "kmeans": km, "stats": stats}
        for name, (split, slots, ea, eb, feats) in arranged.items():
            pred = np.asarray(km.predict(feats).cpu()) if len(feats) else np.zeros(0, np.int64)
            ya, yb = split.y[self.a].cpu().numpy(), split.y[self.b].cpu().numpy()
            row_a = np.full(split.n(self.a), -1)
            row_b = np.full(split.n(self.b), -1)
            row_a[slots.a[slots.a >= 0]] = pred[slots.a >= 0]
            row_b[slots.b[slots.b >= 0]] = pred[slots.b >= 0]
            y = np.concatenate([ya, yb])
            p = np.concatenate([row_a, row_b])
            out["metrics"][name] = clustering_metrics(y, p)
            have_a = slots.a >= 0
            out["pairs"][name] = clustering_metrics(ya[slots.a[have_a]], pred[have_a])  # one row per pair, a's label
            out["slots"][name] = slots
            out["views"][name] = {"ea": ea, "eb": eb, "pred": pred, "row_a": row_a, "row_b": row_b, "features": feats}
        return out


def unlinked_mode(data: BenchmarkData, opts: MvCLNOptions, sure: bool) -> str:
    """'realign' or 'impute' (option ``unlinked``; 'auto': MvCLN re-pairs, SURE re-pairs on a decouple store)."""
    if opts.unlinked != "auto":
        return opts.unlinked
    if not sure:
        return "realign"
    return "realign" if store_mode(data) == "decouple" else "impute"


def store_mode(data: BenchmarkData) -> str | None:
    """The unpair mode that made the store (None when unknown)."""
    info = data.store_info or {}
    unpair = info.get("unpair") if isinstance(info.get("unpair"), dict) else None
    if unpair and "mode" in unpair:
        return str(unpair["mode"])
    return info.get("mode") if isinstance(info.get("mode"), str) else None


def unequal_message(method: str, n_a: int, n_b: int, a: str, b: str, mode: str | None = None) -> str:
    why = (f"the store was unpaired with mode = '{mode}', so the other half of every unlinked row is gone" if mode else
           f"a split has {n_a} unlinked '{a}' rows and {n_b} unlinked '{b}' rows (halves dropped?)")
    return (f"{method} re-pairs the unlinked rows one-to-one, but {why}: use a store made with "
            "[unpair] mode = \"decouple\", or method 'sure' (it imputes missing halves).")


# ---------------------------------------------------------------------------------------------
# the stage's side: check, run, registration
# ---------------------------------------------------------------------------------------------


def check_partial(data: BenchmarkData, ctx: RunContext, *, sure: bool) -> None:
    check_data(data, resolved(ctx.options, ctx.cfg.method_options), sure=sure,  # type: ignore[arg-type]
               n_clusters=ctx.cfg.n_clusters)


def check_data(data: BenchmarkData, opts: MvCLNOptions, *, sure: bool, n_clusters: int = 0) -> None:
    """Refuse, in one line, a benchmark the method cannot train on or evaluate (``opts``: resolved options)."""
    name = "sure" if sure else "mvcln"
    if "train" not in data.splits:
        raise DataError(f"{name}: the benchmark has no train split; it trains on the train split's linked pairs.")
    tr = data.splits["train"]
    ia, _ = tr.linked()
    if len(ia) < 2:
        raise DataError(
            f"{name}: the train split has {len(ia)} linked pair(s); {name} learns from the pairs still linked and needs "
            "at least 2 (BatchNorm): unpair with a ratio below 1 (e.g. --set unpair.ratio=0.5), mode = \"decouple\"."
        )
    k = n_clusters or data.n_classes
    for split_name, s in data.splits.items():
        for m in data.modalities:
            if s.n(m) == 0:
                raise DataError(f"{name}: split '{split_name}' has no rows of modality '{m}'; every row is paired or "
                                f"re-paired across both modalities, so both need rows in every split.")
    n_train = max(tr.n(data.modalities[0]), tr.n(data.modalities[1]))
    if n_train < k:
        raise DataError(f"{name}: the train split has {n_train} pairs to cluster and k = {k} clusters; k-means needs at "
                        "least k rows.")
    mode = unlinked_mode(data, opts, sure)
    if mode == "realign" and store_mode(data) in ("drop", "zero") and opts.unlinked == "auto":
        raise DataError(unequal_message(name, -1, -1, *data.modalities[:2], mode=store_mode(data)))
    if mode == "realign":
        for split_name, s in data.splits.items():
            ja, jb = s.linked()
            ua, ub = s.n(data.modalities[0]) - len(ja), s.n(data.modalities[1]) - len(jb)
            if ua != ub:
                raise DataError(f"split '{split_name}': " + unequal_message(name, ua, ub, *data.modalities[:2]))


def run_partial(data: BenchmarkData, ctx: RunContext, *, sure: bool) -> MethodResult:
    cfg = ctx.cfg
    opts = resolved(ctx.options, cfg.method_options)  # type: ignore[arg-type]
    name = "sure" if sure else "mvcln"
    label = name if opts.variant == "faithful" else opts.variant if not sure else f"sure-{opts.variant}"
    trainer = PartialAlignment(data, opts, seed=cfg.seed, device=ctx.device, sure=sure, n_clusters=cfg.n_clusters)
    config = {"method": cfg.method, "seed": cfg.seed, "n_clusters": cfg.n_clusters, **opts.to_dict()}
    ckpt = ctx.checkpoint_dir / "last.pt" if ctx.checkpoint_dir is not None else None
    resumed = False
    if ckpt is not None and ckpt.exists():
        trainer.restore(ckpt, config, ctx.input_sha256)
        resumed = True
        if ctx.runlog is not None:
            ctx.runlog.restore(list(trainer.history))
        log.info("%s: resumed from %s at epoch %d", name, ckpt, trainer.epoch)
    t0 = time.perf_counter()
    total = opts.epochs
    with tqdm(total=total + 1, initial=trainer.epoch + 1, desc=name, disable=None, leave=False) as bar:
        while trainer.epoch < total:
            row = trainer.run_epoch()
            e = trainer.epoch
            if opts.eval_every and e > 0 and e % opts.eval_every == 0 and e < total:
                ev = trainer.evaluate()
                for split, m in ev["metrics"].items():
                    row.update({f"{split}_acc": m["acc"], f"{split}_nmi": m["nmi"]})
            if ctx.runlog is not None:
                ctx.runlog.append(row)
            bar.update(1)
            if ckpt is not None and opts.checkpoint_every and e > 0 and e % opts.checkpoint_every == 0 and e < total:
                trainer.save(ckpt, config, ctx.input_sha256)
    train_time = time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = trainer.evaluate()
    eval_time = time.perf_counter() - t1
    if ckpt is not None:
        trainer.save(ckpt, config, ctx.input_sha256)
    if ctx.runlog is not None and trainer.history:
        last = dict(trainer.history[-1])
        for split, m in ev["metrics"].items():
            last.update({f"{split}_{k}": v for k, v in m.items() if k in ("acc", "nmi", "ari")})
        last["phase"] = "final"
        ctx.runlog.append(last)

    partners = hidden_partners(data) if store_mode(data) in ("decouple", None) else None
    repairing = partner_scores(trainer, ev, partners)
    arrays: dict[str, np.ndarray] = {}
    for split, v in ev["views"].items():
        s = data.splits[split]
        arrays[f"{split}_cluster"] = np.concatenate([v["row_a"], v["row_b"]])
        arrays[f"{split}_label"] = np.concatenate([s.y[m].cpu().numpy() for m in (trainer.a, trainer.b)])
        arrays[f"{split}_modality"] = np.concatenate([np.zeros(s.n(trainer.a), int), np.ones(s.n(trainer.b), int)])
        arrays[f"{split}_id"] = np.concatenate([np.asarray(s.ids[m], dtype=str) for m in (trainer.a, trainer.b)])
        arrays[f"{split}_pair_embedding"] = torch.cat([v["ea"], v["eb"]], 1).cpu().numpy()
        arrays[f"{split}_pair_a"] = ev["slots"][split].a
        arrays[f"{split}_pair_b"] = ev["slots"][split].b
    split_eval = "test" if "test" in ev["views"] else "train"
    v, s = ev["views"][split_eval], data.splits[split_eval]
    slots = ev["slots"][split_eval]
    # a row's embedding for the map: its pair's [h_a, h_b]
    emb = torch.cat([v["ea"], v["eb"]], 1).cpu().numpy()
    pos_a = np.zeros(s.n(trainer.a), int)
    pos_b = np.zeros(s.n(trainer.b), int)
    pos_a[slots.a[slots.a >= 0]] = np.flatnonzero(slots.a >= 0)
    pos_b[slots.b[slots.b >= 0]] = np.flatnonzero(slots.b >= 0)
    plot_view = {"embedding": np.concatenate([emb[pos_a], emb[pos_b]]), "y_true": arrays[f"{split_eval}_label"],
                 "y_pred": arrays[f"{split_eval}_cluster"], "modality": arrays[f"{split_eval}_modality"]}
    report = [repair_section(label, repairing, trainer.margin, trainer.fine)]
    return MethodResult(
        metrics={label: ev["metrics"]},
        final_epoch=trainer.epoch,
        extra={
            "method_options": opts.to_dict(),
            "repairing": repairing,
            "pair_metrics": ev["pairs"],
            "unlinked": trainer.unlinked_mode(),
            "linked_train_pairs": int(len(trainer.ia)),
            "training_pairs": int(len(trainer.pos)),
            "margin": trainer.margin,
            "robust_switched": trainer.fine,
            "train_seconds": trainer.train_seconds,
        },
        report_sections=report,
        embeddings=arrays,
        timings={"train": train_time, "evaluate": eval_time},
        resumed=resumed,
        plot_view=plot_view,
    )


def partner_scores(trainer: PartialAlignment, ev: dict[str, Any], partners: dict[str, Any] | None) -> dict[str, Any]:
    """The re-pairing scores of an evaluation, per split (``partners``: :func:`hidden_partners`, or None)."""
    repairing: dict[str, Any] = {}
    for split, slots in ev["slots"].items():
        s = trainer.data.splits[split]
        ya, yb = s.y[trainer.a].cpu().numpy(), s.y[trainer.b].cpu().numpy()
        known = partners.get(split) if partners else None
        if trainer.unlinked_mode() == "impute":
            repairing[split] = impute_scores(slots, ya, yb, known)
        else:
            repairing[split] = _split_repair(slots, ya, yb, known)
    return repairing


def _split_repair(slots: Slots, ya: np.ndarray, yb: np.ndarray, partners: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """CAR over every re-paired row; partner recovery and rank over the decoupled rows."""
    rep = slots.repaired
    out = repair_scores(rows_a=slots.a[rep], chosen_b=slots.b[rep], y_a=ya, y_b=yb, partners=partners)
    if partners is not None and slots.dist:
        ranks, n_rank, pools = [], 0, []
        true_b = dict(zip(partners[0].tolist(), partners[1].tolist()))
        for ga, gb, d in slots.dist:
            rows = [i for i, r in enumerate(ga) if int(r) in true_b]
            if not rows:
                continue
            col = {int(r): j for j, r in enumerate(gb)}
            sel = [(i, col.get(true_b[int(ga[i])], -1)) for i in rows]
            sel_in = [(i, j) for i, j in sel if j >= 0]
            n_rank += len(sel)
            pools.append(len(gb))
            if sel_in:
                ii = torch.as_tensor([i for i, _ in sel_in], device=d.device)
                jj = torch.as_tensor([j for _, j in sel_in], device=d.device)
                dd = d[ii]
                ranks.append(((dd < dd[torch.arange(len(ii), device=d.device), jj].unsqueeze(1)).sum(1) + 1).float().cpu())
        if ranks:
            r = torch.cat(ranks)
            out["partner_in_chunk"] = float(len(r) / max(n_rank, 1))
            out["partner_rank"] = float(r.mean())
            out["partner_rank_chance"] = float(np.mean([(p + 1) / 2 for p in pools]))
    return out


def impute_scores(slots: Slots, ya: np.ndarray, yb: np.ndarray, partners: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """Imputed halves: how many, the share of their neighbours of the row's class (``car``), and on a
    decouple store the share of rows whose hidden partner is among the neighbours (``partner_in_k``)."""
    out: dict[str, Any] = {"imputed_rows": int((slots.a < 0).sum() + (slots.b < 0).sum())}
    same, found, n_p = [], [], 0
    true_b = dict(zip(partners[0].tolist(), partners[1].tolist())) if partners else {}
    true_a = {v: k for k, v in true_b.items()}
    for own, nbr, y_own, y_nbr, truth in ((slots.a, slots.nbr_b, ya, yb, true_b), (slots.b, slots.nbr_a, yb, ya, true_a)):
        rows = np.flatnonzero((own >= 0) & (nbr[:, 0] >= 0))
        for r in rows:
            nb = nbr[r][nbr[r] >= 0]
            same.append(np.mean(y_nbr[nb] == y_own[own[r]]))
            if int(own[r]) in truth:
                n_p += 1
                found.append(truth[int(own[r])] in set(nb.tolist()))
    if same:
        out["car"] = float(np.mean(same))
    if found:
        out["with_hidden_partner"] = n_p
        out["partner_in_k"] = float(np.mean(found))
    return out


def repair_section(label: str, repairing: dict[str, Any], margin: float, fine: bool) -> str:
    lines = [f"## Re-pairing ({label})", "",
             "CAR: share of re-paired rows whose partner has the same class. Partner found / rank: the decoupled rows' "
             "hidden partners (from the store's selection file); the rank is among the rows the method chose from "
             "(1 = nearest; chance = (candidates + 1) / 2). Imputed halves: CAR is the share of the averaged neighbours "
             "of the row's class, partner in k the share of rows whose hidden partner is among them.", "",
             "| split | re-paired | CAR | partner found | partner rank | chance rank | imputed | partner in k |",
             "|---|---|---|---|---|---|---|---|"]

    def f(v: Any, fmt: str = "{:.3f}") -> str:
        return "—" if v is None else fmt.format(v)

    for split, r in repairing.items():
        lines.append(f"| {split} | {r.get('repaired', 0)} | {f(r.get('car'))} | {f(r.get('partner_found'))} | "
                     f"{f(r.get('partner_rank'), '{:.1f}')} | {f(r.get('partner_rank_chance'), '{:.1f}')} | "
                     f"{r.get('imputed_rows', 0)} | {f(r.get('partner_in_k'))} |")
    lines += ["", f"Final margin {margin:g}; robust negative term {'on' if fine else 'never switched on'}."]
    return "\n".join(lines)


def _run_mvcln(data: BenchmarkData, ctx: RunContext) -> MethodResult:
    return run_partial(data, ctx, sure=False)


def _run_sure(data: BenchmarkData, ctx: RunContext) -> MethodResult:
    return run_partial(data, ctx, sure=True)


def _check_mvcln(data: BenchmarkData, ctx: RunContext) -> None:
    check_partial(data, ctx, sure=False)


def _check_sure(data: BenchmarkData, ctx: RunContext) -> None:
    check_partial(data, ctx, sure=True)


OPTION_NAMES = tuple(f.name for f in fields(MvCLNOptions))

register_method(Method(
    name="mvcln",
    run=_run_mvcln,
    check=_check_mvcln,
    options_cls=MvCLNOptions,
    family="clustering",
    description="MvCLN (Yang et al., CVPR 2021): towers trained on the linked pairs with the noise-robust contrastive "
                "loss, unlinked rows re-paired, k-means on the pairs; faithful by default, variant 'mvcln-plus'",
))
register_method(Method(
    name="sure",
    run=_run_sure,
    check=_check_sure,
    options_cls=MvCLNOptions,
    family="clustering",
    description="SURE (Yang et al., TPAMI 2022): MvCLN plus reconstruction decoders; missing halves (drop/zero stores) "
                "imputed from the 3 nearest rows, unlinked pairs re-paired",
))
