"""Per-sample loss scoring of pairs, keyed by pair id (the loss-ranking strategies of ``unpair``).

A small two-tower model (one MLP per modality, into a shared L2-normalised embedding; the two
modalities may have different input dims) is trained on the *paired* training split with the
symmetric InfoNCE loss. Everything stays on the device: the features are loaded once and every
batch is an index slice of a seeded per-epoch permutation.

What the published MMU code got wrong, and what this module does instead:

- MMU recorded each loss at the sample's *position in the shuffled loader*, so every slot summed
  the losses of 300 different samples. Here every loss is written at the sample's own index in
  the canonical order (rows sorted by pair id), i.e. keyed by pair id.
- A batch loss depends on which other samples share the batch. Here, after every epoch, each
  pair's symmetric InfoNCE is computed in a separate pass (no gradient) against a *fixed* set of
  negatives: every training pair when there are at most ``negatives`` of them, else a fixed
  seeded reference subset (the same for every epoch), in chunks of ``chunk`` rows. A pair's score
  therefore depends on the model only, not on the batch it landed in; with the model frozen
  (``lr = 0``) the scores do not depend on the shuffling at all.

A pair's score is the mean of its per-epoch losses over the last ``window`` epochs.
Rows are sorted by pair id before anything else, so the result does not depend on the row order
of the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mixbench.device import resolve_device
from mixbench.errors import DataError
from mixbench.store.manifest import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerSettings:
    """Settings of the loss scorer (the ``score_*`` keys of ``[unpair]``)."""

    epochs: int = 20
    window: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dim: int = 64
    hidden: int = 256
    temperature: float = 0.1
    negatives: int = 20000
    chunk: int = 2048
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScoreResult:
    """Per-pair losses in canonical order (sorted by pair id)."""

    pair: np.ndarray  # (N,) int64, ascending
    scores: np.ndarray  # (N,) float64: mean per-sample loss over the last `window` epochs
    per_epoch: np.ndarray  # (epochs, N) float32: per-sample symmetric InfoNCE after each epoch
    train_loss: list[float]  # mean training (batch) loss of each epoch
    settings: ScorerSettings
    n_negatives: int  # size of the fixed reference set of the scoring pass
    device: str
    reference: np.ndarray | None = None  # pair ids of the reference subset (None: all pairs)
    extra: dict[str, Any] = field(default_factory=dict)

    def score_of(self, pair_ids: np.ndarray) -> np.ndarray:
        """Scores of the given pair ids (any order)."""
        pair_ids = np.asarray(pair_ids, dtype=np.int64)
        pos = np.searchsorted(self.pair, pair_ids)
        ok = (pos < len(self.pair)) & (self.pair[np.minimum(pos, len(self.pair) - 1)] == pair_ids)
        if not ok.all():
            raise KeyError(f"pair id {int(pair_ids[~ok][0])} was not scored")
        return self.scores[pos]

    def summary(self) -> dict[str, Any]:
        return {
            **self.settings.to_dict(),
            "device_used": self.device,
            "n_pairs": int(len(self.pair)),
            "n_negatives": self.n_negatives,
            "negatives": "all train pairs" if self.reference is None else "fixed seeded reference subset",
            "train_loss": [round(v, 6) for v in self.train_loss],
            "final_train_loss": self.train_loss[-1] if self.train_loss else None,
            "final_score_mean": float(self.per_epoch[-1].mean()) if len(self.per_epoch) else None,
            "score_mean": float(self.scores.mean()) if len(self.scores) else None,
            "score_std": float(self.scores.std()) if len(self.scores) else None,
            "score_epochs_averaged": list(range(self.settings.epochs - self.settings.window + 1, self.settings.epochs + 1)),
        }


def score_cache_key(store_record: dict[str, Any], split: str, mods: list[str], settings: ScorerSettings,
                    seed: int, device: str) -> str:
    """The key of a scoring run: everything the scores depend on (the input store's record with its
    checksums, the split, the modality order, the scorer settings, the seed and the resolved device),
    and nothing they do not (ratio, strategy, mode, keep)."""
    blob = json.dumps({"store": store_record, "split": split, "modalities": mods, "settings": settings.to_dict(),
                       "seed": seed, "device": device}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def save_scores(path: Path, result: ScoreResult) -> None:
    """Write ``result`` to ``path`` (an ``.npz``; no pickles) atomically (:func:`mixbench.store.manifest.atomic_write`)."""
    meta = {"train_loss": result.train_loss, "settings": result.settings.to_dict(), "n_negatives": result.n_negatives,
            "device": result.device, "extra": result.extra}
    arrays = {"pair": result.pair, "scores": result.scores, "per_epoch": result.per_epoch,
              "meta": np.array(json.dumps(meta, default=str))}
    if result.reference is not None:
        arrays["reference"] = result.reference
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_scores(path: Path) -> ScoreResult:
    """Read a :func:`save_scores` file."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return ScoreResult(pair=z["pair"], scores=z["scores"], per_epoch=z["per_epoch"],
                           train_loss=[float(v) for v in meta["train_loss"]], settings=ScorerSettings(**meta["settings"]),
                           n_negatives=int(meta["n_negatives"]), device=str(meta["device"]),
                           reference=z["reference"] if "reference" in z.files else None, extra=meta["extra"])


def _init_linear(layer: nn.Linear, gen: torch.Generator) -> None:
    """PyTorch's default Linear init (U(±1/sqrt(fan_in))), drawn from ``gen`` (no global RNG)."""
    bound = 1.0 / float(np.sqrt(layer.in_features))
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=gen)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=gen)


class Tower(nn.Module):
    """Standardise → Linear → GELU → Linear → L2 normalise. Mean/std are fitted on the train features."""

    def __init__(self, x: torch.Tensor, hidden: int, dim: int, gen: torch.Generator) -> None:
        super().__init__()
        mean = x.mean(0)
        std = x.std(0, unbiased=False).clamp_min(1e-6)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.fc1 = nn.Linear(x.shape[1], hidden)
        self.fc2 = nn.Linear(hidden, dim)
        for layer in (self.fc1, self.fc2):
            _init_linear(layer, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x - self.mean) / self.std
        return F.normalize(self.fc2(F.gelu(self.fc1(h))), dim=1)


class TwoTower(nn.Module):
    """One :class:`Tower` per modality into a shared normalised embedding space."""

    def __init__(self, xa: torch.Tensor, xb: torch.Tensor, hidden: int, dim: int, gen: torch.Generator) -> None:
        super().__init__()
        self.a = Tower(xa, hidden, dim, gen)
        self.b = Tower(xb, hidden, dim, gen)

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(xa), self.b(xb)


def info_nce(za: torch.Tensor, zb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of a batch of aligned pairs (mean over the batch)."""
    logits = za @ zb.T / temperature
    target = torch.arange(len(za), device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.no_grad()
def per_sample_info_nce(
    za: torch.Tensor, zb: torch.Tensor, ref: torch.Tensor | None, temperature: float, chunk: int
) -> torch.Tensor:
    """Per-pair symmetric InfoNCE against a fixed set of negatives.

    Pair i's candidates are itself plus every reference pair other than i (``ref`` = row indices
    of the reference subset; ``None`` = all pairs). Returns an (N,) float32 tensor.
    """
    n = len(za)
    ref_idx = torch.arange(n, device=za.device) if ref is None else ref
    ra, rb = za[ref_idx], zb[ref_idx]
    out = torch.empty(n, dtype=torch.float32, device=za.device)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk), device=za.device)
        a, b = za[rows], zb[rows]
        pos = (a * b).sum(1, keepdim=True) / temperature
        self_mask = rows[:, None] == ref_idx[None, :]
        s_ab = (a @ rb.T / temperature).masked_fill(self_mask, float("-inf"))
        s_ba = (b @ ra.T / temperature).masked_fill(self_mask, float("-inf"))
        l_ab = torch.logsumexp(torch.cat([pos, s_ab], 1), 1) - pos[:, 0]
        l_ba = torch.logsumexp(torch.cat([pos, s_ba], 1), 1) - pos[:, 0]
        out[rows] = (0.5 * (l_ab + l_ba)).float()
    return out


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _torch_generator(seq: np.random.SeedSequence) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    return g


def score_pairs(
    x_a: np.ndarray | torch.Tensor,
    x_b: np.ndarray | torch.Tensor,
    pair: np.ndarray,
    settings: ScorerSettings | None = None,
    *,
    seed: int = 0,
    shuffle_seed: int | None = None,
    progress: bool = True,
) -> ScoreResult:
    """Train the two-tower scorer on aligned pairs and return every pair's loss, keyed by pair id.

    ``x_a[i]`` and ``x_b[i]`` are the two halves of pair ``pair[i]`` (any row order; rows are
    sorted by pair id first). ``seed`` seeds everything through one ``np.random.SeedSequence``
    (model init, per-epoch shuffling, reference subset); ``shuffle_seed`` overrides the shuffling
    stream only (used to show that scores do not depend on it).
    """
    s = settings or ScorerSettings()
    pair = np.asarray(pair, dtype=np.int64)
    n = len(pair)
    if x_a.shape[0] != n or x_b.shape[0] != n:
        raise DataError(
            f"loss scorer: {x_a.shape[0]} and {x_b.shape[0]} feature rows for {n} pairs; the two halves "
            "must be aligned row by row."
        )
    if n < 2:
        raise DataError(f"loss scorer: {n} training pair(s); InfoNCE needs at least 2. Use the random strategy.")
    if len(np.unique(pair)) != n:
        raise DataError("loss scorer: pair ids are not unique; every pair must appear once.")
    window = min(s.window, s.epochs)
    device = resolve_device(s.device)
    order = np.argsort(pair, kind="stable")
    pair_sorted = pair[order]
    xa = torch.as_tensor(_as_numpy(x_a)[order], dtype=torch.float32)
    xb = torch.as_tensor(_as_numpy(x_b)[order], dtype=torch.float32)
    for name, x in (("first", xa), ("second", xb)):
        if not torch.isfinite(x).all():
            bad = int(torch.nonzero(~torch.isfinite(x).all(1))[0, 0])
            raise DataError(f"loss scorer: {name} modality features of pair {int(pair_sorted[bad])} hold NaN or inf.")

    init_seq, shuffle_seq, ref_seq = np.random.SeedSequence(seed).spawn(3)
    if shuffle_seed is not None:
        shuffle_seq = np.random.SeedSequence(shuffle_seed)
    g_init = _torch_generator(init_seq)
    g_shuffle = _torch_generator(shuffle_seq)
    reference: np.ndarray | None = None
    ref_t: torch.Tensor | None = None
    if n > s.negatives:
        ref_rows = np.sort(np.random.default_rng(ref_seq).choice(n, size=s.negatives, replace=False))
        reference = pair_sorted[ref_rows]
        ref_t = torch.as_tensor(ref_rows, device=device)
    n_neg = n - 1 if reference is None else s.negatives

    model = TwoTower(xa, xb, s.hidden, s.dim, g_init).to(device)
    xa, xb = xa.to(device), xb.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    n_batches = max(1, round(n / s.batch_size))
    per_epoch = np.empty((s.epochs, n), dtype=np.float32)
    train_loss: list[float] = []
    log.info(
        "loss scorer: %d pairs, dims %d/%d, %d epochs × %d batches on %s, %d negatives per sample",
        n, xa.shape[1], xb.shape[1], s.epochs, n_batches, device, n_neg,
    )
    for epoch in tqdm(range(s.epochs), desc="unpair: loss scorer", unit="epoch", disable=not progress):
        model.train()
        perm = torch.randperm(n, generator=g_shuffle).to(device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for idx in torch.tensor_split(perm, n_batches):
            za, zb = model(xa[idx], xb[idx])
            loss = info_nce(za, zb, s.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(idx)
        train_loss.append(float(total) / n)
        model.eval()
        with torch.no_grad():
            za_all = torch.cat([model.a(xa[i : i + s.chunk]) for i in range(0, n, s.chunk)])
            zb_all = torch.cat([model.b(xb[i : i + s.chunk]) for i in range(0, n, s.chunk)])
            per_epoch[epoch] = per_sample_info_nce(za_all, zb_all, ref_t, s.temperature, s.chunk).cpu().numpy()
        if not np.isfinite(per_epoch[epoch]).all() or not np.isfinite(train_loss[-1]):
            raise DataError(
                f"loss scorer diverged at epoch {epoch + 1} (non-finite loss); lower score_lr or raise "
                "score_temperature and rerun."
            )
        log.debug("loss scorer epoch %d: train loss %.4f, mean per-sample loss %.4f", epoch + 1, train_loss[-1], per_epoch[epoch].mean())
    scores = per_epoch[-window:].astype(np.float64).mean(0)
    return ScoreResult(
        pair=pair_sorted,
        scores=scores,
        per_epoch=per_epoch,
        train_loss=train_loss,
        settings=s,
        n_negatives=n_neg,
        device=str(device),
        reference=reference,
    )
