"""Several faithful DM2C runs trained as one program: stacked weights, batched matmuls.

A sweep or a seed study trains many tiny DM2C models (the faithful Wikipedia model has a few
thousand weights; a joint step is about a hundred small kernels, bound by per-op overhead, not
arithmetic). :class:`StackedTrainer` takes ``S`` faithful trainers (:class:`train.dm2c.FaithfulTrainer`,
same config but the seed; their stores may differ, e.g. one unpair store per sweep cell, as long as
the feature dimension is the same) and trains them together: every weight is one tensor
``2 × S × …`` (the two modality AEs, the two mappings or the two critics, times the runs), every
layer one ``baddbmm`` over ``2S`` groups, so one step of all runs costs about what one step of one
run costs.

Each run keeps its own RNG streams and draws them in the solo order: its parameters are
initialised by its own :class:`~train.dm2c.DM2CNet` from its generator, its batch permutations come
from the same generator, its k-means seeds from its numpy generator. What differs from the solo run
is float rounding only:

- Rows. Each run's mixed batch splits differently between the modalities, so a step's groups are
  padded to the largest and masked: BatchNorm statistics, losses and critic means are taken over
  each group's valid rows (:class:`MaskedBatchNorm`), and padded rows get no gradient.
- Order of sums. ``baddbmm`` and the masked statistics sum in another order than ``addmm`` and
  the BatchNorm kernel, so the last bits differ from the solo run's; over 220 adversarial epochs
  those differences grow, as they do between two machines. tests/test_dm2c_stacked.py checks the
  losses against solo runs step by step on a short schedule, and ``bench/dm2c.py --batched``
  compares the five-seed distributions on the full protocol.
- Running statistics. The solo step calls the mappings as ``g_ab(z_a), g_ba(ab), g_ba(z_b), g_ab(ba)``;
  the stacked step calls ``[g_ab, g_ba]`` on ``[z_a, z_b]`` and then on ``[ba, ab]``, so BatchNorm
  running statistics are updated afterwards, in the solo order per module.

Optimisers are the same elementwise formulas as ``torch.optim`` (RMSprop; Adam for pre-training
and ``gan = "naive"``) on the stacked tensors, with a per-run step count and a per-run mask: a run
whose batch is skipped (a modality with fewer rows than BatchNorm needs, as in the solo trainer)
neither steps nor updates its optimiser state or running statistics.

At the end every run's weights, optimiser states, RNG states and history go back into its own
trainer, so each can write a final checkpoint that the solo train stage resumes as finished
(``mixbench sweep --batched`` writes the run folders this way).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mixbench.errors import ConfigError

from .dm2c import JOINT, FaithfulTrainer, PhaseTimer, cpu_threads, mixed_batch_order

if TYPE_CHECKING:
    from .eval_queue import EvalJob

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# masked batch norm over groups
# ---------------------------------------------------------------------------------------------


class MaskedBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of ``G`` independent groups ``x: G × N × F``, statistics over each
    group's valid rows (``mask: G × N × 1`` of 0/1, ``count: G × 1 × 1`` valid rows, ≥ 1; ``mask``
    None: all rows valid, ``count`` unused). Returns ``(y, mean, biased var)``; the statistics carry no gradient.

    The backward assumes what the stacked step guarantees: the gradient reaching padded rows is
    zero (their outputs feed only row-wise layers and masked losses); it returns zero for them."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None,
                count: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if mask is None:
            mean = x.mean(1, keepdim=True)
            xc = x - mean
            var = (xc * xc).mean(1, keepdim=True)
        else:
            mt = mask.transpose(1, 2)
            mean = torch.bmm(mt, x).div_(count)
            xc = x - mean
            var = torch.bmm(mt, xc * xc).div_(count)
        inv = (var + eps).rsqrt_()
        xhat = xc.mul_(inv)
        y = torch.addcmul(bias, xhat, weight)
        ctx.save_for_backward(xhat, inv, weight, mask, count)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, _dmean: Any, _dvar: Any) -> tuple[Any, ...]:
        xhat, inv, weight, mask, count = ctx.saved_tensors
        dw = (dy * xhat).sum(1, keepdim=True)
        db = dy.sum(1, keepdim=True)
        dxh = dy * weight
        if mask is None:
            s1 = dxh.mean(1, keepdim=True)
            s2 = (dxh * xhat).mean(1, keepdim=True)
            dx = (dxh - s1 - xhat * s2).mul_(inv)
        else:
            mt = mask.transpose(1, 2)
            s1 = torch.bmm(mt, dxh).div_(count)
            s2 = torch.bmm(mt, dxh * xhat).div_(count)
            dx = (dxh - s1 - xhat * s2).mul_(inv).mul_(mask)
        return dx, dw, db, None, None, None


# ---------------------------------------------------------------------------------------------
# stacked layers
# ---------------------------------------------------------------------------------------------


@dataclass
class StackedBN:
    weight: torch.Tensor  # leaf, P × S × F
    bias: torch.Tensor
    running_mean: torch.Tensor  # P × S × F
    running_var: torch.Tensor
    tracked: torch.Tensor  # P × S (num_batches_tracked)
    momentum: float
    eps: float


@dataclass
class StackedLinear:
    weight: torch.Tensor  # leaf, P × S × out × in
    bias: torch.Tensor  # leaf, P × S × out
    act: bool  # LeakyReLU after it
    bn: StackedBN | None  # BatchNorm after the activation


BNStats = list[tuple[StackedBN, torch.Tensor, torch.Tensor]]
"""(layer, batch mean G × 1 × F, biased batch var) per BatchNorm call, in call order."""


def stack_sequential(seqs: Sequence[Sequence[nn.Sequential]], device: torch.device) -> list[StackedLinear]:
    """Stack ``seqs[p][s]`` (P module pairs × S runs of the same ``Linear / LeakyReLU / BatchNorm1d``
    layout) into one list of stacked layers (copies of the weights)."""
    ref = list(seqs[0][0])
    layers: list[StackedLinear] = []

    def gather(idx: int, name: str) -> torch.Tensor:
        return torch.stack([torch.stack([getattr(list(seq)[idx], name).detach() for seq in row]) for row in seqs]).to(device)

    for i, m in enumerate(ref):
        if type(m) is nn.Linear:
            layers.append(StackedLinear(gather(i, "weight").requires_grad_(), gather(i, "bias").requires_grad_(), False, None))
        elif type(m) is nn.LeakyReLU:
            if m.negative_slope != 0.2 or not layers:
                raise ConfigError("stacked DM2C supports LeakyReLU(0.2) after a Linear layer only")
            layers[-1].act = True
        elif type(m) is nn.BatchNorm1d:
            if not layers or m.momentum is None or not m.affine or not m.track_running_stats:
                raise ConfigError("stacked DM2C supports affine BatchNorm1d with running statistics after a Linear layer")
            layers[-1].bn = StackedBN(
                gather(i, "weight").requires_grad_(), gather(i, "bias").requires_grad_(),
                gather(i, "running_mean"), gather(i, "running_var"), gather(i, "num_batches_tracked"),
                float(m.momentum), float(m.eps),
            )
        else:
            raise ConfigError(f"stacked DM2C cannot stack a {type(m).__name__} layer")
    return layers


def unstack_into(layers: list[StackedLinear], seqs: Sequence[Sequence[nn.Sequential]]) -> None:
    """Copy the stacked weights and running statistics back into the modules (inverse of :func:`stack_sequential`)."""
    with torch.no_grad():
        for p, row in enumerate(seqs):
            for s, seq in enumerate(row):
                mods = [m for m in seq if type(m) in (nn.Linear, nn.BatchNorm1d)]
                it = iter(mods)
                for layer in layers:
                    lin = next(it)
                    lin.weight.copy_(layer.weight[p, s])
                    lin.bias.copy_(layer.bias[p, s])
                    if layer.bn is not None:
                        bn = next(it)
                        bn.weight.copy_(layer.bn.weight[p, s])
                        bn.bias.copy_(layer.bn.bias[p, s])
                        bn.running_mean.copy_(layer.bn.running_mean[p, s])
                        bn.running_var.copy_(layer.bn.running_var[p, s])
                        bn.num_batches_tracked.copy_(layer.bn.tracked[p, s])


def layer_parameters(layers: list[StackedLinear]) -> list[torch.Tensor]:
    """The leaves in module order (weight, bias, then the BatchNorm's weight, bias): ``parameters()`` order."""
    out: list[torch.Tensor] = []
    for layer in layers:
        out += [layer.weight, layer.bias]
        if layer.bn is not None:
            out += [layer.bn.weight, layer.bn.bias]
    return out


def forward(layers: list[StackedLinear], x: torch.Tensor, *, select: int | None = None, mask: torch.Tensor | None = None,
            count: torch.Tensor | None = None, training: bool = True, stats: BNStats | None = None) -> torch.Tensor:
    """``x: P × S × N × in`` through the stacked layers (``select``: only pair member ``select``,
    ``x: S × N × in``). Training mode takes batch statistics over the valid rows (``mask`` /
    ``count`` shaped ``G × N × 1`` / ``G × 1 × 1``, G = P·S) and appends them to ``stats``; eval
    mode uses the running statistics."""
    lead = x.shape[:-2]
    n = x.shape[-2]
    h = x.reshape(-1, n, x.shape[-1])
    g = h.shape[0]
    for layer in layers:
        w, b = (layer.weight, layer.bias) if select is None else (layer.weight[select], layer.bias[select])
        out = w.shape[-2]
        h = torch.baddbmm(b.reshape(g, 1, out), h, w.reshape(g, out, -1).transpose(1, 2))
        if layer.act:
            h = torch._C._nn.leaky_relu_(h, 0.2)
        bn = layer.bn
        if bn is not None:
            bw, bb = (bn.weight, bn.bias) if select is None else (bn.weight[select], bn.bias[select])
            if training:
                h, mean, var = MaskedBatchNorm.apply(h, bw.reshape(g, 1, out), bb.reshape(g, 1, out), mask, count, bn.eps)
                if stats is not None:
                    stats.append((bn, mean, var))
            else:
                rm, rv = (bn.running_mean, bn.running_var) if select is None else (bn.running_mean[select], bn.running_var[select])
                h = torch.addcmul(bb.reshape(g, 1, out), (h - rm.reshape(g, 1, out)) * (rv.reshape(g, 1, out) + bn.eps).rsqrt(),
                                  bw.reshape(g, 1, out))
    return h.reshape(*lead, n, h.shape[-1])


@torch.no_grad()
def update_running(bn: StackedBN, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor, active: torch.Tensor,
                   select: int | None = None) -> None:
    """One BatchNorm running-statistics update (``momentum`` EMA, unbiased variance) for the active runs."""
    rm, rv, tr = (bn.running_mean, bn.running_var, bn.tracked) if select is None else (
        bn.running_mean[select], bn.running_var[select], bn.tracked[select])
    shape = rm.shape
    mean = mean.reshape(shape)
    c = count.reshape(*shape[:-1], 1)
    unbiased = var.reshape(shape) * c / (c - 1).clamp_(min=1.0)
    mom = bn.momentum
    act = active.reshape(*shape[:-1], 1)  # active: shape[:-1] (runs, or pair member × runs)
    rm.copy_(torch.where(act, rm * (1 - mom) + mean * mom, rm))
    rv.copy_(torch.where(act, rv * (1 - mom) + unbiased * mom, rv))
    tr.add_(act.squeeze(-1).to(tr.dtype))


# ---------------------------------------------------------------------------------------------
# optimisers over stacked leaves (torch.optim's formulas, per-run steps and masks)
# ---------------------------------------------------------------------------------------------


class StackedOptimizer:
    """RMSprop or Adam over stacked leaves whose axis ``run_axis`` indexes the runs (``select``: only
    member ``select`` of the pair axis is optimised). ``step(active)``: runs with ``active`` False
    keep their parameters and state."""

    def __init__(self, groups: list[tuple[list[torch.Tensor], float]], kind: str, n_runs: int, *, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), alpha: float = 0.99, eps: float = 1e-8,
                 select: int | None = None) -> None:
        self.groups = groups
        self.kind = kind
        self.wd = weight_decay
        self.betas = betas
        self.alpha = alpha
        self.eps = eps
        self.select = select
        self.steps = np.zeros(n_runs, dtype=np.int64)
        self.state: list[list[dict[str, torch.Tensor]]] = [
            [self._fresh(self._view(p)) for p in params] for params, _ in groups
        ]

    def _view(self, p: torch.Tensor) -> torch.Tensor:
        return p if self.select is None else p[self.select]

    def _fresh(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.kind == "rmsprop":
            return {"square_avg": torch.zeros_like(v)}
        return {"exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    def params(self) -> list[torch.Tensor]:
        return [p for params, _ in self.groups for p in params]

    @torch.no_grad()
    def step(self, active: np.ndarray) -> None:
        all_active = bool(active.all())
        self.steps += active
        if all_active and (self.kind == "rmsprop" or (self.steps == self.steps[0]).all()):
            self._step_foreach()
            return
        run_axis = 0 if self.select is not None else 1
        act_t = None if all_active else torch.as_tensor(active)
        for (params, lr), states in zip(self.groups, self.state):
            for p, st in zip(params, states):
                if p.grad is None:
                    continue
                view = self._view(p)
                grad = self._view(p.grad)
                if not all_active:
                    before = {k: v.clone() for k, v in st.items()}
                    old = view.clone()
                if self.wd:
                    grad = grad.add(view, alpha=self.wd)
                if self.kind == "rmsprop":
                    sq = st["square_avg"]
                    sq.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
                    view.addcdiv_(grad, sq.sqrt().add_(self.eps), value=-lr)
                else:
                    b1, b2 = self.betas
                    st["exp_avg"].lerp_(grad, 1 - b1)
                    st["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                    steps = self.steps
                    if (steps == steps[0]).all():
                        bc1 = 1 - b1 ** int(steps[0])
                        bc2_sqrt = math.sqrt(1 - b2 ** int(steps[0]))
                        denom = (st["exp_avg_sq"].sqrt() / bc2_sqrt).add_(self.eps)
                        view.addcdiv_(st["exp_avg"], denom, value=-(lr / bc1))
                    else:  # runs at different step counts (one was skipped): per-run bias corrections
                        shape = [1] * view.dim()
                        shape[run_axis] = -1
                        st_f = torch.as_tensor(np.maximum(steps, 1), dtype=view.dtype).reshape(shape)
                        bc1 = 1 - b1 ** st_f
                        bc2_sqrt = (1 - b2 ** st_f).sqrt()
                        denom = (st["exp_avg_sq"].sqrt() / bc2_sqrt).add_(self.eps)
                        view.add_(-(lr / bc1) * st["exp_avg"] / denom)
                if not all_active:
                    shape = [1] * view.dim()
                    shape[run_axis] = -1
                    keep = ~act_t.reshape(shape)
                    view.copy_(torch.where(keep, old, view))
                    for k, v in st.items():
                        v.copy_(torch.where(keep, before[k], v))

    def _step_foreach(self) -> None:
        """Every run steps, at one step count: the multi-tensor form of the same formulas."""
        for (params, lr), states in zip(self.groups, self.state):
            pairs = [(self._view(p), self._view(p.grad), st) for p, st in zip(params, states) if p.grad is not None]
            if not pairs:
                continue
            views = [v for v, _, _ in pairs]
            grads = [g for _, g, _ in pairs]
            if self.wd:
                grads = torch._foreach_add(grads, views, alpha=self.wd)
            if self.kind == "rmsprop":
                sq = [st["square_avg"] for _, _, st in pairs]
                torch._foreach_mul_(sq, self.alpha)
                torch._foreach_addcmul_(sq, grads, grads, value=1 - self.alpha)
                avg = torch._foreach_sqrt(sq)
                torch._foreach_add_(avg, self.eps)
                torch._foreach_addcdiv_(views, grads, avg, value=-lr)
            else:
                b1, b2 = self.betas
                m = [st["exp_avg"] for _, _, st in pairs]
                v = [st["exp_avg_sq"] for _, _, st in pairs]
                torch._foreach_lerp_(m, grads, 1 - b1)
                torch._foreach_mul_(v, b2)
                torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
                step = int(self.steps[0])
                bc1 = 1 - b1 ** step
                bc2_sqrt = math.sqrt(1 - b2 ** step)
                denom = torch._foreach_sqrt(v)
                torch._foreach_div_(denom, bc2_sqrt)
                torch._foreach_add_(denom, self.eps)
                torch._foreach_addcdiv_(views, m, denom, value=-(lr / bc1))

    @torch.no_grad()
    def clamp_(self, bound: float) -> None:
        ps = self.params()
        torch._foreach_clamp_min_(ps, -bound)
        torch._foreach_clamp_max_(ps, bound)


# ---------------------------------------------------------------------------------------------
# the stacked trainer
# ---------------------------------------------------------------------------------------------


class StackedTrainer:
    """Train faithful DM2C trainers (same config but the seed) as one stacked program.

    ``trainers`` are fresh :class:`~train.dm2c.FaithfulTrainer` s (not restored): their nets hold
    the initial weights drawn from their own generators. :meth:`run` trains all, writes each run's
    history rows and final evaluation into its trainer, copies the final weights back into its net
    and returns the final evaluations."""

    def __init__(self, trainers: Sequence[FaithfulTrainer]) -> None:
        if not trainers:
            raise ConfigError("stacked DM2C needs at least one run")
        self.trainers = list(trainers)
        t0 = self.trainers[0]
        for t in self.trainers:
            if type(t) is not FaithfulTrainer:
                raise ConfigError(f"stacked DM2C trains the faithful variant only, not {t.cfg.variant!r}")
            if t.arch != t0.arch or t.device != t0.device or t.modalities != t0.modalities:
                raise ConfigError("stacked DM2C runs need the same architecture, device and modalities")
            if {**t.cfg.to_dict(), "seed": 0} != {**t0.cfg.to_dict(), "seed": 0}:
                raise ConfigError("stacked DM2C runs need the same [train] config except the seed")
            if t.phase_index or t.epoch or t.history:
                raise ConfigError("stacked DM2C starts fresh runs only (a restored trainer resumes on its own)")
        self.cfg = t0.cfg
        self.arch = t0.arch
        self.device = t0.device
        self.dtype = t0.x_train.dtype
        self.S = len(self.trainers)
        nets = [t.net for t in self.trainers]
        dev = self.device
        self.ae_enc = stack_sequential([[n.aes[0].encoder for n in nets], [n.aes[1].encoder for n in nets]], dev)
        self.ae_dec = stack_sequential([[n.aes[0].decoder for n in nets], [n.aes[1].decoder for n in nets]], dev)
        self.map_enc = stack_sequential([[n.g_ab.encoder for n in nets], [n.g_ba.encoder for n in nets]], dev)
        self.map_dec = stack_sequential([[n.g_ab.decoder for n in nets], [n.g_ba.decoder for n in nets]], dev)
        self.critics = stack_sequential([[n.d_a for n in nets], [n.d_b for n in nets]], dev)
        self.timer = PhaseTimer(dev)
        self.skipped = np.zeros(self.S, dtype=np.int64)
        self.optimizers: dict[str, StackedOptimizer] = {}
        self._rows_cache: dict[str, torch.Tensor] = {}

    # -- parameters ---------------------------------------------------------------------------
    def ae_params(self) -> list[torch.Tensor]:
        return layer_parameters(self.ae_enc) + layer_parameters(self.ae_dec)

    def map_params(self) -> list[torch.Tensor]:
        return layer_parameters(self.map_enc) + layer_parameters(self.map_dec)

    def write_back(self) -> None:
        """Final weights and running statistics into every run's own modules."""
        nets = [t.net for t in self.trainers]
        unstack_into(self.ae_enc, [[n.aes[0].encoder for n in nets], [n.aes[1].encoder for n in nets]])
        unstack_into(self.ae_dec, [[n.aes[0].decoder for n in nets], [n.aes[1].decoder for n in nets]])
        unstack_into(self.map_enc, [[n.g_ab.encoder for n in nets], [n.g_ba.encoder for n in nets]])
        unstack_into(self.map_dec, [[n.g_ab.decoder for n in nets], [n.g_ba.decoder for n in nets]])
        unstack_into(self.critics, [[n.d_a for n in nets], [n.d_b for n in nets]])

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> list[Any]:
        from .dm2c import background_eval
        from .eval_queue import EvalQueue

        cfg = self.cfg
        threads = self.trainers[0].intra_op_threads()
        mode = background_eval(cfg, self.device, threads, self.S * self.trainers[0].evaluations_due())
        with cpu_threads(threads), EvalQueue(mode, threads) as queue:
            t0 = self.trainers[0]
            for pi, phase in enumerate(t0.phases):
                n_epochs = t0.epochs_of(pi)
                self._begin_phase(pi)
                bar = tqdm(range(n_epochs), desc=f"{phase} ×{self.S}", unit="epoch", disable=None, leave=False)
                for epoch in bar:
                    rows, job = self._train_epoch(pi, epoch)
                    queue.push((pi, epoch, rows), job)
                    self._commit(queue.ready())
                bar.close()
            self._commit(queue.ready(wait=True))
            self.write_back()
            self._hand_over()
            for t in self.trainers:
                t.save_checkpoint(phase_end=True)  # no-op without a checkpoint_dir
        evs = [t.last_eval for t in self.trainers]
        if cfg.epochs == 0 or any(ev is None or ev.epoch != cfg.epochs - 1 for ev in evs):
            evs = [t.final_evaluation() for t in self.trainers]
        return evs

    def _commit(self, done: Any) -> None:
        """Epochs whose evaluations have finished, in order: every run's row into its history and log."""
        for (pi, epoch, rows), evs in done:
            for i, (t, row) in enumerate(zip(self.trainers, rows)):
                if evs is not None:
                    row.update(t._eval_row(evs[i]))
                t.history.append(row)
                if t.runlog is not None:
                    t.runlog.append(row)
                t.phase_index, t.epoch = pi, epoch + 1

    def _hand_over(self) -> None:
        """Timings, skipped batches and optimiser states into every trainer (so its checkpoint is complete)."""
        for i, t in enumerate(self.trainers):
            t.timer = PhaseTimer(t.device, self.timer.seconds)
            t.skipped_batches = int(self.skipped[i])
            t.optimizers = self.torch_optimizers(i)

    def _begin_phase(self, pi: int) -> None:
        cfg = self.cfg
        t0 = self.trainers[0]
        if t0.phases[pi] == JOINT:
            if cfg.gan == "wasserstein":
                self.optimizers = {
                    "generator": StackedOptimizer([(self.ae_params(), cfg.lr_g), (self.map_params(), cfg.lr_map)],
                                                  "rmsprop", self.S, weight_decay=cfg.weight_decay),
                    "critic": StackedOptimizer([(layer_parameters(self.critics), cfg.lr_d)], "rmsprop", self.S,
                                               weight_decay=cfg.weight_decay),
                }
            else:
                betas = (cfg.b1, cfg.b2)
                self.optimizers = {
                    "generator": StackedOptimizer([(self.ae_params(), cfg.lr_g), (self.map_params(), cfg.lr_map)],
                                                  "adam", self.S, weight_decay=cfg.weight_decay, betas=betas),
                    "critic": StackedOptimizer([(layer_parameters(self.critics), cfg.lr_d)], "adam", self.S,
                                               weight_decay=cfg.weight_decay, betas=betas),
                }
        else:
            self.optimizers = {"pretrain": StackedOptimizer(
                [(self.ae_params(), cfg.pretrain_lr[pi])], "adam", self.S,
                weight_decay=cfg.pretrain_weight_decay, betas=(cfg.b1, cfg.b2), select=pi)}

    def _train_epoch(self, pi: int, epoch: int) -> tuple[list[dict[str, Any]], Any]:
        """One epoch of every run: the rows and, when an evaluation is due, the job that finishes
        it (:meth:`evaluation_job`)."""
        t0 = self.trainers[0]
        phase = t0.phases[pi]
        start = time.perf_counter()
        job = None
        if phase == JOINT:
            with self.timer("joint-train"):
                rows = self.joint_epoch(epoch)
            seeds = [t.next_kmeans_seed() for t in self.trainers]  # every joint epoch, as the solo runs
            if t0._eval_due(epoch):
                job = self.evaluation_job(epoch, seeds)
        else:
            with self.timer(phase):
                rows = self.pretrain_epoch(pi, epoch)
        sec = round(time.perf_counter() - start, 6)
        return [{"phase": phase, "epoch": epoch, **row, "seconds": sec} for row in rows], job

    # -- batches -------------------------------------------------------------------------------
    def _padded(self, members: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
        """Row indices ``members[p][s]`` (host) padded to one ``P × S × N`` index tensor, its mask
        ``(P·S) × N × 1``, counts ``(P·S) × 1 × 1`` (≥ 1) and the host counts ``P × S``."""
        P, S = len(members), len(members[0])
        sizes = np.array([[len(v) for v in row] for row in members], dtype=np.int64)
        n = max(1, int(sizes.max()))
        idx = torch.zeros(P, S, n, dtype=torch.long)
        mask = torch.zeros(P, S, n, dtype=self.dtype)
        for p in range(P):
            for s in range(S):
                k = int(sizes[p, s])
                idx[p, s, :k] = members[p][s]
                mask[p, s, :k] = 1.0
        count = torch.as_tensor(np.maximum(sizes, 1), dtype=self.dtype).reshape(P * S, 1, 1)
        dev = self.device
        return (idx.to(dev), mask.reshape(P * S, n, 1).to(dev), count.to(dev), sizes)

    def _cached(self, key: str, make: Any) -> torch.Tensor:
        if key not in self._rows_cache:
            self._rows_cache[key] = make()
        return self._rows_cache[key]

    def _rows_of(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Each run's rows padded to one ``S × Nmax × D`` tensor (gathers index into it per run)."""
        n = max(len(x) for x in xs)
        if all(len(x) == n for x in xs):
            return torch.stack(xs)
        out = xs[0].new_zeros((len(xs), n, xs[0].shape[1]))
        for s, x in enumerate(xs):
            out[s, :len(x)] = x
        return out

    # -- pre-training --------------------------------------------------------------------------
    def pretrain_epoch(self, pi: int, epoch: int) -> list[dict[str, Any]]:
        cfg = self.cfg
        b = cfg.batch_size
        min_rows = self.trainers[0].min_rows
        mod = self.trainers[0].modalities[pi]
        xs = [t.train_split.x[mod] for t in self.trainers]
        X = self._cached(f"pretrain-{pi}", lambda: self._rows_of(xs))
        perms = [torch.randperm(len(x), generator=t.gen) for t, x in zip(self.trainers, xs)]
        n_steps = max((len(x) + b - 1) // b for x in xs)
        opt = self.optimizers["pretrain"]
        run_ix = torch.arange(self.S, device=self.device).view(self.S, 1)
        losses: list[torch.Tensor] = []
        actives: list[np.ndarray] = []
        for step in range(n_steps):
            members = [[perm[step * b:(step + 1) * b] for perm in perms]]
            sizes = np.array([len(m) for m in members[0]])
            active = sizes >= min_rows
            self.skipped += (sizes > 0) & ~active
            if not active.any():
                continue
            idx, mask, count, _ = self._padded(members)
            full = bool((sizes == sizes[0]).all())
            x = X[run_ix, idx[0]]  # S × N × D
            stats: BNStats = []
            m, c = (None, count) if full else (mask, count)
            z = forward(self.ae_enc, x, select=pi, mask=m, count=c, stats=stats)
            rec = forward(self.ae_dec, z, select=pi, mask=m, count=c, stats=stats)
            err = (rec - x).square_()
            if not full:
                err = err * mask
            loss = err.sum((1, 2)) / (count.view(-1) * x.shape[-1])  # S
            act_t = torch.as_tensor(active, device=self.device)
            opt.zero_grad()
            (loss * act_t).sum().backward()
            opt.step(active)
            for bn, mean, var in stats:
                update_running(bn, mean, var, count, act_t, select=pi)
            losses.append(loss.detach())
            actives.append(active)
        rows = []
        vals = torch.stack(losses).cpu().numpy() if losses else np.zeros((0, self.S))
        act = np.stack(actives) if actives else np.zeros((0, self.S), dtype=bool)
        for s, t in enumerate(self.trainers):
            v = vals[act[:, s], s]
            t._check_finite(v, ("rec",), epoch)
            rows.append({"rec": float(v.mean()) if len(v) else None, "steps": int(len(v))})
        return rows

    # -- joint training ---------------------------------------------------------------------------
    def joint_epoch(self, epoch: int) -> list[dict[str, Any]]:
        cfg = self.cfg
        min_rows = self.trainers[0].min_rows
        X = self._cached("joint", lambda: self._rows_of([t.x_train for t in self.trainers]))
        plans = [mixed_batch_order(t.flags_host, cfg.batch_size, t.gen) for t in self.trainers]
        n_steps = max(len(sl) for _, sl in plans)
        run_ix = torch.arange(self.S, device=self.device).view(1, self.S, 1)
        g_rows: list[torch.Tensor] = []
        g_act: list[np.ndarray] = []
        d_rows: list[torch.Tensor] = []
        d_act: list[np.ndarray] = []
        for step in range(n_steps):
            members: list[list[torch.Tensor]] = [[], []]
            active = np.zeros(self.S, dtype=bool)
            for s, (order, slices) in enumerate(plans):
                if step < len(slices):
                    start, na, nb = slices[step]
                    members[0].append(order[start:start + na])
                    members[1].append(order[start + na:start + na + nb])
                    active[s] = na >= min_rows and nb >= min_rows
                    self.skipped[s] += not active[s]
                else:
                    members[0].append(order[:0])
                    members[1].append(order[:0])
            if not active.any():
                continue
            idx, mask, count, _ = self._padded(members)
            x = X[run_ix, idx]  # 2 × S × N × D
            act_t = torch.as_tensor(active, device=self.device)
            terms, codes = self.generator_step(x, mask, count, act_t, active)
            g_rows.append(terms)
            g_act.append(active)
            if (step + 1) % cfg.critic_every == 0:
                d_rows.append(self.critic_step(codes, mask, count, act_t, active))
                d_act.append(active)
        t0 = self.trainers[0]
        g = torch.stack(g_rows).cpu().numpy() if g_rows else np.zeros((0, self.S, len(t0.LOSS_TERMS)))
        d = torch.stack(d_rows).cpu().numpy() if d_rows else np.zeros((0, self.S, len(t0.CRITIC_TERMS)))
        ga = np.stack(g_act) if g_act else np.zeros((0, self.S), dtype=bool)
        da = np.stack(d_act) if d_act else np.zeros((0, self.S), dtype=bool)
        rows = []
        for s, t in enumerate(self.trainers):
            gs, ds = g[ga[:, s], s], d[da[:, s], s]
            t._check_finite(gs, t.LOSS_TERMS, epoch)
            t._check_finite(ds, t.CRITIC_TERMS, epoch)
            row: dict[str, Any] = {"steps": len(gs), "critic_steps": len(ds)}
            row.update(t._named(t.LOSS_TERMS, gs.mean(axis=0) if len(gs) else None))
            row.update(t._named(t.CRITIC_TERMS, ds.mean(axis=0) if len(ds) else None))
            rows.append(row)
        return rows

    @staticmethod
    def _masked_mean(v: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Mean over each group's valid rows and all columns of ``v: P × S × N × F`` → ``P × S``."""
        P, S, n, f = v.shape
        return (v.reshape(P * S, n, f) * mask).sum((1, 2)).div_(count.view(-1) * f).view(P, S)

    def generator_step(self, x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, act_t: torch.Tensor,
                       active: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """All runs' generator step: ``x`` is ``2 × S × N × D`` (first / second modality rows)."""
        cfg = self.cfg
        flip_mask = mask.view(2, self.S, -1, 1).flip(0).reshape(mask.shape)
        flip_count = count.view(2, self.S, 1, 1).flip(0).reshape(count.shape)
        ae_stats: BNStats = []
        z = forward(self.ae_enc, x, mask=mask, count=count, stats=ae_stats)
        rec = forward(self.ae_dec, z, mask=mask, count=count, stats=ae_stats)
        s1: BNStats = []
        mapped = forward(self.map_dec, forward(self.map_enc, z, mask=mask, count=count, stats=s1),
                         mask=mask, count=count, stats=s1)  # [ab, ba]
        s2: BNStats = []
        swapped = mapped.flip(0)  # [ba, ab]
        back = forward(self.map_dec, forward(self.map_enc, swapped, mask=flip_mask, count=flip_count, stats=s2),
                       mask=flip_mask, count=flip_count, stats=s2)  # [g_ab(ba), g_ba(ab)] = [bab, aba]
        cyc = back.flip(0)  # [aba, bab]
        dec_stats: BNStats = []
        cycrec = forward(self.ae_dec, cyc, mask=mask, count=count, stats=dec_stats)
        rec_l = self._masked_mean((rec - x).square(), mask, count)
        cyc_l = self._masked_mean((z - cyc).abs(), mask, count)
        cycrec_l = self._masked_mean((cycrec - x).square(), mask, count)
        crit = forward(self.critics, swapped)  # [d_a(ba), d_b(ab)]
        if cfg.gan == "wasserstein":
            adv = -self._masked_mean(crit, flip_mask, flip_count).sum(0)
        else:
            bce = F.binary_cross_entropy_with_logits(crit, torch.ones_like(crit), reduction="none")
            adv = self._masked_mean(bce, flip_mask, flip_count).sum(0)
        loss = rec_l.sum(0) + cyc_l.sum(0) * cfg.lambda1 + cycrec_l.sum(0) + cfg.lambda3 * adv  # S
        opt = self.optimizers["generator"]
        opt.zero_grad()
        (loss * act_t).sum().backward(inputs=opt.params())
        opt.step(active)
        # running statistics in the solo call order: AEs, then g_ab(z_a), g_ba(ab), g_ba(z_b), g_ab(ba), decoders
        cnt2 = count.view(2, self.S, 1, 1)
        fcnt2 = flip_count.view(2, self.S, 1, 1)
        both = act_t.repeat(2).view(2, self.S)
        for bn, mean, var in ae_stats:
            update_running(bn, mean, var, count, both)
        for (bn, m1, v1), (_, m2, v2) in zip(s1, s2):
            f = m1.shape[-1]
            m1v, v1v, m2v, v2v = (t.view(2, self.S, f) for t in (m1, v1, m2, v2))
            first_m, first_v = torch.stack([m1v[0], m2v[1]]), torch.stack([v1v[0], v2v[1]])
            first_c = torch.stack([cnt2[0], fcnt2[1]])
            second_m, second_v = torch.stack([m2v[0], m1v[1]]), torch.stack([v2v[0], v1v[1]])
            second_c = torch.stack([fcnt2[0], cnt2[1]])
            update_running(bn, first_m, first_v, first_c, both)
            update_running(bn, second_m, second_v, second_c, both)
        for bn, mean, var in dec_stats:
            update_running(bn, mean, var, count, both)
        terms = torch.stack([loss, rec_l[0], rec_l[1], cyc_l[0], cyc_l[1], cycrec_l[0], cycrec_l[1], adv], 1).detach()
        return terms, {"z": z.detach(), "mapped": mapped.detach()}

    def critic_step(self, codes: dict[str, torch.Tensor], mask: torch.Tensor, count: torch.Tensor, act_t: torch.Tensor,
                    active: np.ndarray) -> torch.Tensor:
        """All runs' critic step on the codes of the generator step: real ``[z_a, z_b]``, fake ``[ba, ab]``."""
        cfg = self.cfg
        z, fake = codes["z"], codes["mapped"].flip(0)
        n = z.shape[2]
        flip_mask = mask.view(2, self.S, -1, 1).flip(0).reshape(mask.shape)
        flip_count = count.view(2, self.S, 1, 1).flip(0).reshape(count.shape)
        out = forward(self.critics, torch.cat([z, fake], 2))
        real_o, fake_o = out[:, :, :n], out[:, :, n:]
        if cfg.gan == "wasserstein":
            d = self._masked_mean(fake_o, flip_mask, flip_count) - self._masked_mean(real_o, mask, count)  # 2 × S
        else:
            bce = F.binary_cross_entropy_with_logits
            real_l = self._masked_mean(bce(real_o, torch.ones_like(real_o), reduction="none"), mask, count)
            fake_l = self._masked_mean(bce(fake_o, torch.zeros_like(fake_o), reduction="none"), flip_mask, flip_count)
            d = (real_l + fake_l) / 2
        loss = (d[0] + d[1]) * cfg.lambda3
        opt = self.optimizers["critic"]
        opt.zero_grad()
        (loss * act_t).sum().backward()
        opt.step(active)
        if cfg.gan == "wasserstein":
            opt.clamp_(cfg.clip)
        return torch.stack([loss, d[0], d[1]], 1).detach()

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, split: str) -> list[torch.Tensor]:
        """Every run's unified embedding of ``split`` (eval mode), as the solo :meth:`FaithfulTrainer.unify`."""
        mods = self.trainers[0].modalities
        target = 0 if self.cfg.unify == "first" else 1
        parts: list[list[torch.Tensor]] = [[] for _ in self.trainers]
        for i, m in enumerate(mods):
            xs = [t.data.splits[split].x[m] for t in self.trainers]
            if max(len(x) for x in xs) == 0:
                continue
            X = self._rows_of(xs)
            z = forward(self.ae_enc, X, select=i, training=False)
            if i != target:
                z = forward(self.map_dec, forward(self.map_enc, z, select=i, training=False), select=i, training=False)
            for s, x in enumerate(xs):
                parts[s].append(z[s, :len(x)])
        lat = self.arch.latent
        return [torch.cat(p) if p else torch.zeros((0, lat), device=self.device) for p in parts]

    def evaluate(self, epoch: int, seeds: list[int] | None = None) -> list[Any]:
        """Embed, draw each run's k-means seed from its own generator (unless given), cluster, score."""
        return self.evaluation_job(epoch, seeds)()

    def evaluation_job(self, epoch: int, seeds: list[int] | None = None) -> EvalJob:
        """Every run's embeddings and k-means seed now; the clustering (remote part, picklable for
        a worker process when the queue runs one) and the metrics (finish part) as a job for later:
        they depend on nothing that training changes afterwards."""
        from .eval_cluster import cluster_runs, embeddings_to_host, kmeans_from_host
        from .eval_queue import EvalJob

        t0 = self.trainers[0]
        with self.timer("eval-embed"):
            embs = {s: self.embed(s) for s in t0.eval_splits}
        if seeds is None:
            seeds = [t.next_kmeans_seed() for t in self.trainers]
        per_run = [{s: embs[s][i] for s in embs} for i in range(self.S)]
        portable = self.device.type == "cpu"  # picklable for a worker process (no copy in this one)

        def finish(result: tuple[list[tuple[Any, dict[str, np.ndarray]]], float]) -> list[Any]:
            clustered, seconds = result
            self.timer.add("kmeans", seconds)
            evs = []
            with self.timer("metrics"):
                for i, t in enumerate(self.trainers):
                    km, preds = clustered[i]
                    t.timer = PhaseTimer(t.device)  # finish_evaluation times its metrics there (replaced at the end)
                    evs.append(t.finish_evaluation(epoch, seeds[i], per_run[i],
                                                   kmeans_from_host(km) if portable else km, preds))
            return evs

        if portable:  # CPU; measured: the solo fits are faster on CPU (train.kmeans_stacked)
            specs = [t.cluster_spec() for t in self.trainers]
            return EvalJob(cluster_runs, (specs, embeddings_to_host(per_run), seeds, True), finish)
        return EvalJob(self._cluster_many, (per_run, seeds), finish)

    def _cluster_many(self, embs: list[dict[str, torch.Tensor]], seeds: list[int]
                      ) -> tuple[list[tuple[Any, dict[str, np.ndarray]]], float]:
        """Every run's evaluation k-means as one batched fit (accelerators), and its seconds."""
        from .kmeans_stacked import cluster_many

        start = time.perf_counter()
        out = cluster_many(self.trainers, embs, seeds)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out, time.perf_counter() - start

    # -- hand-over ------------------------------------------------------------------------------
    def torch_optimizers(self, i: int) -> dict[str, torch.optim.Optimizer]:
        """Run ``i``'s joint-phase optimisers as ``torch.optim`` objects holding its slice of the
        stacked state (what its checkpoint records)."""
        t = self.trainers[i]
        opts = t.make_joint_optimizers()
        stacked = self.optimizers
        if "generator" not in stacked:
            return opts
        for name, opt in opts.items():
            st = stacked[name]
            own = [p for g in opt.param_groups for p in g["params"]]
            flat = []  # (stacked leaf, pair member, its state) in the torch optimiser's parameter order
            for (params, _), states in zip(st.groups, st.state):
                per_member: list[list[tuple[torch.Tensor, dict[str, torch.Tensor]]]] = [[], []]
                for p, s in zip(params, states):
                    for member in range(2):
                        per_member[member].append((p, {k: v[member, i] for k, v in s.items()}))
                flat += per_member[0] + per_member[1]
            if len(flat) != len(own):
                raise RuntimeError("stacked and solo optimiser layouts differ")
            for p, (_, s) in zip(own, flat):
                entry: dict[str, Any] = {"step": torch.tensor(float(st.steps[i]))}
                if st.kind == "rmsprop":
                    entry["square_avg"] = s["square_avg"].clone().reshape(p.shape)
                else:
                    entry["exp_avg"] = s["exp_avg"].clone().reshape(p.shape)
                    entry["exp_avg_sq"] = s["exp_avg_sq"].clone().reshape(p.shape)
                opt.state[p] = entry
        return opts
