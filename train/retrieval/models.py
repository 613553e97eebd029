"""The retrieval models: correlation matching (CCA), supervised deep cross-modal hashing (DCMH
family) and a two-tower contrastive model. Each fits on a :class:`RetrievalData` and encodes rows
of either modality into one shared space (real vectors, or ±1 codes for the hashing model).

How each uses the training rows (see also README, "Cross-modal retrieval"):

- ``CCAModel``: linked pairs only (unpaired rows carry no correlation information).
- ``HashModel`` (DCMH's objective, Jiang & Li, CVPR 2017, on features): every labelled training
  row of each modality. The likelihood term runs over all image × text row pairs with
  ``S_ij = 1`` when the rows share a label, so an unpaired row learns as much from it as a linked
  one. A linked pair shares one code ``B = sign(F_i + G_j)`` in the quantisation term (as DCMH's
  pairs do); an unpaired row has its own, ``sign(F_i)`` or ``sign(G_j)``.
- ``TwoTowerModel``: linked pairs only, symmetric InfoNCE over in-batch negatives (CLIP's loss).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from mixbench.errors import DataError

from .data import RetrievalData, labelled

log = logging.getLogger(__name__)

EpochHook = Callable[[dict[str, Any]], None]


class EpochCheckpoint(Protocol):
    """Where a model's training state goes after each epoch and comes back from (see
    :class:`train.retrieval.methods.RetrievalCheckpoints`)."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, epoch: int, state: Callable[[], dict[str, Any]]) -> None: ...


def mlp(d_in: int, hiddens: list[int], d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for h in hiddens:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


@dataclass
class Standardiser:
    """z-scores with the training rows' mean and std (a constant column stays 0)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardiser:
        std = x.std(0, unbiased=False)
        return cls(x.mean(0), torch.where(std > 0, std, torch.ones_like(std)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _seeded(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def _init(module: nn.Module, gen: torch.Generator) -> None:
    """Weights from the run's own generator (PyTorch's default Linear init, drawn from ``gen``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            with torch.no_grad():
                m.weight.copy_(torch.empty_like(m.weight, device="cpu").uniform_(-bound, bound, generator=gen))
                m.bias.copy_(torch.empty_like(m.bias, device="cpu").uniform_(-bound, bound, generator=gen))


# ---------------------------------------------------------------------------------------------
# CCA
# ---------------------------------------------------------------------------------------------


class CCAModel:
    """scikit-learn's ``CCA`` fitted on the linked training pairs; rows are projected one
    modality at a time (``transform`` with the other side a dummy)."""

    ranking = "cosine"

    def __init__(self, n_components: int, max_iter: int) -> None:
        self.n_components = n_components
        self.max_iter = max_iter

    def fit(self, data: RetrievalData, seed: int, hook: EpochHook | None = None) -> CCAModel:
        from sklearn.cross_decomposition import CCA

        ia, ib = data.linked()
        a, b = (data.train.rows[m] for m in data.modalities)
        k = self.n_components
        if len(ia) <= k:
            raise DataError(
                f"retrieval-cca: {len(ia)} linked training pairs; CCA with n_components = {k} needs more than {k}. "
                "Unpair fewer pairs (ratio), or use retrieval-hash, which also learns from unpaired rows via labels."
            )
        if k > min(data.dims.values()):
            raise DataError(f"retrieval-cca: n_components = {k} exceeds the smaller feature dim {min(data.dims.values())}; "
                            "lower method_options.n_components.")
        t0 = time.perf_counter()
        xa = a.x[ia].double().cpu().numpy()
        xb = b.x[ib].double().cpu().numpy()
        self.cca_ = CCA(n_components=k, max_iter=self.max_iter).fit(xa, xb)
        self.dims_ = (xa.shape[1], xb.shape[1])
        self.n_pairs_ = len(ia)
        if hook is not None:
            hook({"phase": "fit", "epoch": 1, "seconds": time.perf_counter() - t0, "pairs": len(ia)})
        return self

    def encode(self, x: torch.Tensor, side: int) -> torch.Tensor:
        xn = x.double().cpu().numpy()
        if side == 0:
            out = self.cca_.transform(xn)
        else:
            out = self.cca_.transform(np.zeros((len(xn), self.dims_[0])), xn)[1]
        return torch.as_tensor(np.ascontiguousarray(out), dtype=torch.float32, device=x.device)


# ---------------------------------------------------------------------------------------------
# Deep cross-modal hashing (DCMH objective)
# ---------------------------------------------------------------------------------------------


class HashModel:
    """DCMH's objective on features: one MLP per modality to ``bits`` real outputs, trained by
    alternating modality passes; codes are their signs.

    Loss of a mini-batch of modality-a rows (outputs ``f``) against every modality-b row's stored
    output ``G`` (DCMH's buffers), normalised by ``batch · n_rows`` as DCMH does:
    ``−Σ (S·Θ − log(1 + e^Θ)) + γ ‖B − f‖² + η ‖f·1 + F_rest·1‖²``, ``Θ = ½ f Gᵀ``, ``S`` = share
    a label. After each epoch the codes are ``B = sign(γ(F_i + G_j))`` for linked pairs and the sign
    of the row's own output for unpaired rows."""

    ranking = "hamming"

    def __init__(self, bits: int, hiddens: list[int], epochs: int, batch_size: int, lr: float,
                 gamma: float, eta: float, weight_decay: float) -> None:
        self.bits, self.hiddens, self.epochs, self.batch_size = bits, hiddens, epochs, batch_size
        self.lr, self.gamma, self.eta, self.weight_decay = lr, gamma, eta, weight_decay

    def fit(self, data: RetrievalData, seed: int, hook: EpochHook | None = None,
            checkpoint: EpochCheckpoint | None = None) -> HashModel:
        dev = data.train.rows[data.modalities[0]].x.device
        gen = _seeded(seed, dev)
        rows = [data.train.rows[m] for m in data.modalities]
        for m, r in zip(data.modalities, rows):
            if r.n() == 0:
                raise DataError(f"retrieval-hash: modality '{m}' has no training rows; both towers need some.")
            if not bool(labelled(r.y).all()):
                bad = int((~labelled(r.y)).sum())
                raise DataError(
                    f"retrieval-hash: {bad} training row(s) of '{m}' have no label; the hashing loss is supervised "
                    "(label similarity). Label them, or use retrieval-cca / retrieval-twotower, which need no labels."
                )
        self.scalers_ = [Standardiser.fit(r.x) for r in rows]
        xs = [s(r.x) for s, r in zip(self.scalers_, rows)]
        labels = [data.label_matrix(r.y) for r in rows]
        s_ab = (labels[0] @ labels[1].T > 0).to(torch.float32)  # (n_a, n_b)
        ia, ib = data.linked()
        self.nets_ = [mlp(x.shape[1], self.hiddens, self.bits) for x in xs]
        for net in self.nets_:
            _init(net, gen)
            net.to(dev)
        opts = [torch.optim.Adam(n.parameters(), lr=self.lr, weight_decay=self.weight_decay) for n in self.nets_]
        n = [x.shape[0] for x in xs]
        with torch.no_grad():
            buf = [net(x) for net, x in zip(self.nets_, xs)]  # F and G buffers
        self.history_: list[dict[str, Any]] = []
        start = 0
        state = checkpoint.load() if checkpoint is not None else None
        if state is not None:  # the state after epoch `start`: nets, optimisers, generator, F/G buffers
            start = _restore_common(state, self.nets_, opts, gen, self.history_)
            buf = [b.to(dev) for b in state["buffers"]]
        codes = self._codes(buf, ia, ib)
        for epoch in range(start + 1, self.epochs + 1):
            t0 = time.perf_counter()
            parts = {"likelihood": 0.0, "quantisation": 0.0, "balance": 0.0}
            for side in (0, 1):
                other = buf[1 - side]
                s = s_ab if side == 0 else s_ab.T
                perm = torch.randperm(n[side], generator=gen).to(dev)
                for lo in range(0, n[side], self.batch_size):
                    idx = perm[lo: lo + self.batch_size]
                    f = self.nets_[side](xs[side][idx])
                    buf[side][idx] = f.detach()
                    theta = 0.5 * f @ other.T
                    like = -(s[idx] * theta - nn.functional.softplus(theta)).sum()
                    quant = ((codes[side][idx] - f) ** 2).sum()
                    rest = buf[side].sum(0) - buf[side][idx].sum(0)
                    bal = ((f.sum(0) + rest) ** 2).sum()
                    loss = (like + self.gamma * quant + self.eta * bal) / (len(idx) * n[side])
                    opts[side].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[side].step()
                    parts["likelihood"] += float(like.detach()) / (n[side] * n[1 - side])
                    parts["quantisation"] += float(quant.detach()) / (n[side] * self.bits)
                    parts["balance"] += float(bal.detach()) / (n[side] ** 2 * self.bits) / math.ceil(n[side] / self.batch_size)
            codes = self._codes(buf, ia, ib)
            row = {"phase": "train", "epoch": epoch, "seconds": time.perf_counter() - t0, **parts}
            self.history_.append(row)
            if hook is not None:
                hook(row)
            if checkpoint is not None:
                checkpoint.save(epoch, lambda: {**_common_state(self, opts, gen, epoch),
                                                "buffers": [b.cpu() for b in buf]})
        self.codes_ = codes
        return self

    @staticmethod
    def _codes(buf: list[torch.Tensor], ia: torch.Tensor, ib: torch.Tensor) -> list[torch.Tensor]:
        ca, cb = torch.sign(buf[0]), torch.sign(buf[1])
        if len(ia):
            shared = torch.sign(buf[0][ia] + buf[1][ib])
            ca[ia], cb[ib] = shared, shared
        return [torch.where(c == 0, torch.ones_like(c), c) for c in (ca, cb)]

    @torch.no_grad()
    def encode(self, x: torch.Tensor, side: int) -> torch.Tensor:
        net = self.nets_[side]
        net.eval()
        out = torch.sign(net(self.scalers_[side](x)))
        return torch.where(out == 0, torch.ones_like(out), out)


# ---------------------------------------------------------------------------------------------
# two-tower contrastive
# ---------------------------------------------------------------------------------------------


class TwoTowerModel:
    """An MLP per modality into a shared ``dim``-d space, L2-normalised.

    Objective: symmetric InfoNCE over the linked pairs of a mini-batch (every other pair's half is
    a negative; temperature ``tau``), weight ``pair_weight``; with ``labels`` also a cross-entropy
    of every labelled training row (linked or unpaired, either modality) against class prototypes
    shared by both modalities (learned unit vectors; multi-hot labels: the target spread evenly
    over the row's classes; temperature ``label_temperature``). Without ``labels`` only linked
    pairs are used."""

    ranking = "cosine"

    def __init__(self, dim: int, hiddens: list[int], epochs: int, batch_size: int, lr: float,
                 temperature: float, weight_decay: float, labels: bool = False, pair_weight: float = 1.0,
                 label_temperature: float = 1.0) -> None:
        self.dim, self.hiddens, self.epochs, self.batch_size = dim, hiddens, epochs, batch_size
        self.lr, self.temperature, self.weight_decay = lr, temperature, weight_decay
        self.labels, self.pair_weight, self.label_temperature = labels, pair_weight, label_temperature

    def fit(self, data: RetrievalData, seed: int, hook: EpochHook | None = None,
            checkpoint: EpochCheckpoint | None = None) -> TwoTowerModel:
        rows = [data.train.rows[m] for m in data.modalities]
        dev = rows[0].x.device
        gen = _seeded(seed, dev)
        ia, ib = data.linked()
        if self.labels:
            for m, r in zip(data.modalities, rows):
                if r.n() == 0:
                    raise DataError(f"retrieval-twotower: modality '{m}' has no training rows; both towers need some.")
                if not bool(labelled(r.y).all()):
                    bad = int((~labelled(r.y)).sum())
                    raise DataError(
                        f"retrieval-twotower with labels = true: {bad} training row(s) of '{m}' have no label. Label "
                        "them, or set method_options.labels = false (linked pairs only)."
                    )
        elif len(ia) < 2:
            raise DataError(
                f"retrieval-twotower: {len(ia)} linked training pair(s); the contrastive loss needs linked pairs "
                "(at least 2). Unpair fewer pairs, set method_options.labels = true, or use retrieval-hash; both "
                "learn from unpaired rows through their labels."
            )
        self.scalers_ = [Standardiser.fit(r.x) for r in rows]
        xs = [self.scalers_[i](rows[i].x) for i in range(2)]
        targets = []
        if self.labels:
            for r in rows:
                t = data.label_matrix(r.y)
                targets.append(t / t.sum(1, keepdim=True))
        self.nets_ = [mlp(x.shape[1], self.hiddens, self.dim) for x in xs]
        for net in self.nets_:
            _init(net, gen)
            net.to(dev)
        params = [p for net in self.nets_ for p in net.parameters()]
        if self.labels:
            self.prototypes_ = nn.Parameter(torch.randn(data.n_classes, self.dim, generator=gen).to(dev))
            params.append(self.prototypes_)
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        n_pairs = len(ia)
        use_pairs = n_pairs >= 2 and self.pair_weight > 0
        # one epoch = one pass over the largest row set; each step draws a batch of pairs and, with
        # labels, a batch of rows of each modality
        sizes = [n_pairs if use_pairs else 0] + ([x.shape[0] for x in xs] if self.labels else [])
        steps = max(1, math.ceil(max(sizes) / self.batch_size))
        self.history_: list[dict[str, Any]] = []
        start = 0
        state = checkpoint.load() if checkpoint is not None else None
        if state is not None:  # the state after epoch `start`: towers, prototypes, optimiser, generator
            start = _restore_common(state, self.nets_, [opt], gen, self.history_)
            if self.labels:
                with torch.no_grad():
                    self.prototypes_.copy_(state["prototypes"])
        for epoch in range(start + 1, self.epochs + 1):
            t0 = time.perf_counter()
            perms = [torch.randperm(k, generator=gen).to(dev) if k else None for k in sizes]
            totals = {"infonce": 0.0, "label_ce": 0.0}
            for step in range(steps):
                loss = torch.zeros((), device=dev)
                if use_pairs:
                    idx = _wrap(perms[0], step, self.batch_size)
                    za = nn.functional.normalize(self.nets_[0](xs[0][ia[idx]]), dim=1)
                    zb = nn.functional.normalize(self.nets_[1](xs[1][ib[idx]]), dim=1)
                    logits = za @ zb.T / self.temperature
                    target = torch.arange(len(idx), device=dev)
                    nce = 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))
                    loss = loss + self.pair_weight * nce
                    totals["infonce"] += float(nce.detach())
                if self.labels:
                    protos = nn.functional.normalize(self.prototypes_, dim=1)
                    for side in (0, 1):
                        idx = _wrap(perms[1 + side], step, self.batch_size)
                        z = nn.functional.normalize(self.nets_[side](xs[side][idx]), dim=1)
                        ce = nn.functional.cross_entropy(z @ protos.T / self.label_temperature, targets[side][idx])
                        loss = loss + 0.5 * ce
                        totals["label_ce"] += 0.5 * float(ce.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            row = {"phase": "train", "epoch": epoch, "seconds": time.perf_counter() - t0}
            row.update({k: v / steps for k, v in totals.items() if (k == "infonce" and use_pairs) or
                        (k == "label_ce" and self.labels)})
            self.history_.append(row)
            if hook is not None:
                hook(row)
            if checkpoint is not None:
                checkpoint.save(epoch, lambda: {**_common_state(self, [opt], gen, epoch),
                                                "prototypes": self.prototypes_.detach().cpu() if self.labels else None})
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor, side: int) -> torch.Tensor:
        net = self.nets_[side]
        net.eval()
        return nn.functional.normalize(net(self.scalers_[side](x)), dim=1)


def _common_state(model: HashModel | TwoTowerModel, optimisers: list[torch.optim.Optimizer], gen: torch.Generator,
                  epoch: int) -> dict[str, Any]:
    """What every epoch-trained model's checkpoint holds: the epochs done, the networks, the optimisers
    (Adam's moments and step counts), the run's generator, the standardisers and the epoch rows."""
    return {"epoch": epoch, "nets": [n.state_dict() for n in model.nets_],
            "optimisers": [o.state_dict() for o in optimisers], "generator": gen.get_state(),
            "scalers": [(sc.mean.cpu(), sc.std.cpu()) for sc in model.scalers_],
            "rows": [dict(r) for r in model.history_]}


def _restore_common(state: dict[str, Any], nets: list[nn.Module], optimisers: list[torch.optim.Optimizer],
                    gen: torch.Generator, history: list[dict[str, Any]]) -> int:
    """Load :func:`_common_state` into freshly built networks and optimisers; the epochs done."""
    for net, sd in zip(nets, state["nets"]):
        net.load_state_dict(sd)
    for opt, sd in zip(optimisers, state["optimisers"]):
        opt.load_state_dict(sd)
    gen.set_state(state["generator"])
    history[:] = [dict(r) for r in state["rows"]]
    return int(state["epoch"])


def _wrap(perm: torch.Tensor, step: int, batch: int) -> torch.Tensor:
    """The ``step``-th batch of a permutation, wrapping around (smaller row sets cycle within an epoch)."""
    n = len(perm)
    start = (step * batch) % n
    idx = perm[start: start + batch]
    if len(idx) < min(batch, n):
        idx = torch.cat([idx, perm[: min(batch, n) - len(idx)]])
    return idx
