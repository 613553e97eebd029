"""DM2C (Jiang et al., NeurIPS 2019): the model and the faithful trainer, device-resident.

The faithful variant follows the reference code (jiangyangby/DM2C ``code/model.py`` and
``train.py``; the deviations are listed in the README's design notes):

Model
    Two modality autoencoders (:class:`DeepAE`): encoder ``Linear → LeakyReLU(0.2) → BatchNorm`` per
    hidden layer and a linear latent; mirrored decoder with ``LeakyReLU(0.2)`` after *every* layer
    (output included) and ``BatchNorm`` after the hidden ones. Two cross-modal mappings
    ``g_ab`` (first → second modality) and ``g_ba`` (second → first), themselves :class:`DeepAE`\\ s on
    the latent code whose *decoder output* is the mapped code. Two critics
    ``Linear(L, L/4) → LeakyReLU(0.2) → Linear(L/4, 1)``, one per latent space.

Protocol
    1. AE pre-training, each modality on its own training rows: MSE, Adam(lr per modality,
       betas (b1, b2), weight decay), ``pretrain_epochs`` epochs of shuffled mini-batches.
    2. Joint training over all training rows of both modalities (every row one instance), shuffled
       mixed mini-batches split by modality. Every iteration a generator step with
       ``MSE rec (both) + λ1·L1 latent cycle (both) + MSE input-space cycle (both) + λ3·adv``,
       RMSprop with the reference's two parameter groups (AEs at ``lr_g``, mappings at ``lr_map``);
       every ``critic_every``-th iteration a critic step (RMSprop ``lr_d``, weights clipped to
       ``±clip``) on the codes of that same forward pass. ``gan = "naive"`` uses the BCE forms and Adam.
    3. Every ``eval_every`` epochs: embed train and test rows into the first modality's latent space
       (BatchNorm in eval mode; first-modality rows → their encoder latent, second-modality rows →
       ``g_ba``\\ (their latent)), fit k-means on the train embeddings, predict the test rows, compute
       the seven metrics on both.

Speed, same algorithm
    Features stay on the device. A batch is a slice of a per-epoch permutation drawn from one seeded
    CPU ``torch.Generator`` (so CPU and GPU runs see the same batches); the rows of each batch are
    stably grouped by modality on the host once per epoch, so the step has no boolean indexing and
    no host synchronisation. Losses are kept as device tensors and read once per epoch. Evaluation
    embeds each split in one pass and clusters with the device k-means (``train.kmeans``).

Deviations (documented, not silent): a batch in which a modality has fewer rows than BatchNorm needs
(2; 1 without batchnorm) is skipped and counted (the reference would crash or produce NaN there);
parameter init draws from the run's own generator, not the global RNG.

Variants
    A variant is a named subclass of :class:`FaithfulTrainer` registered with
    :func:`register_variant`, with its own options class (``[train] variant_options``). The faithful
    code paths are never changed by a variant.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mixbench.errors import ConfigError, DataError, MixbenchError

from .eval_cluster import numpy_labels as _numpy_labels

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import BenchmarkData, SplitTensors
    from .eval_cluster import ClusterSpec
    from .eval_queue import EvalJob
    from .runlog import RunLog

log = logging.getLogger(__name__)

JOINT = "joint"
LEAK = 0.2


class TrainingDiverged(MixbenchError):
    """A loss became NaN or inf; training stopped and the last good checkpoint was kept."""


# ---------------------------------------------------------------------------------------------
# architecture
# ---------------------------------------------------------------------------------------------


def pow2_floor(x: float) -> int:
    """The largest power of two ≤ ``x`` (1 for x < 2)."""
    return 1 if x < 2 else 1 << int(math.floor(math.log2(x)))


def default_hiddens(dim: int) -> list[int]:
    """AE widths for input dim ``d``: ``[max(4L, P(d/2)), 2L, L]`` with ``L = min(128, P(d - 1))``,
    where ``P(x)`` is the largest power of two ≤ x.

    The latent L is the largest power of two strictly below d (a bottleneck), capped at 128. This
    gives the reference's Wikipedia AE ``[1024, 256, 128]`` at d = 2048, its NUS-WIDE image AE
    ``[512, 256, 128]`` at d = 1000, and ``[32, 16, 8]`` at d = 10 (the 10-d Wikipedia benchmark of the
    README).

    >>> default_hiddens(2048), default_hiddens(1000), default_hiddens(10)
    ([1024, 256, 128], [512, 256, 128], [32, 16, 8])
    """
    if dim < 2:
        raise DataError(f"feature dim {dim}: DM2C needs at least 2 feature columns.")
    latent = min(128, pow2_floor(dim - 1))
    return [max(4 * latent, pow2_floor(dim / 2)), 2 * latent, latent]


@dataclass(frozen=True)
class Architecture:
    """Resolved layer widths (recorded in checkpoints and metrics.json)."""

    dim: int
    hiddens: tuple[int, ...]
    map_hiddens: tuple[int, ...]
    critic_hidden: int
    batchnorm: bool

    @property
    def latent(self) -> int:
        return self.hiddens[-1]

    @classmethod
    def resolve(cls, cfg: TrainConfig, dim: int) -> Architecture:
        """Widths from the config, empty fields filled by the rule (:func:`default_hiddens`,
        mappings ``[L, 2L, L]``, critic ``max(1, L // 4)``)."""
        hiddens = tuple(cfg.hiddens) if cfg.hiddens else tuple(default_hiddens(dim))
        latent = hiddens[-1]
        maps = tuple(cfg.map_hiddens) if cfg.map_hiddens else (latent, 2 * latent, latent)
        if maps[-1] != latent:
            raise ConfigError(
                f"[train] map_hiddens = {list(maps)}: the last width must equal the latent dim {latent} "
                "(hiddens[-1])."
            )
        critic = cfg.critic_hidden or max(1, latent // 4)
        return cls(dim=dim, hiddens=hiddens, map_hiddens=maps, critic_hidden=critic, batchnorm=cfg.batchnorm)

    def to_dict(self) -> dict[str, Any]:
        return {"dim": self.dim, "hiddens": list(self.hiddens), "map_hiddens": list(self.map_hiddens),
                "critic_hidden": self.critic_hidden, "batchnorm": self.batchnorm}


class FastSequential(nn.Sequential):
    """``nn.Sequential`` of ``Linear`` / ``LeakyReLU`` / ``BatchNorm1d`` layers whose forward calls
    the same kernels as the modules do (``linear``, in-place ``leaky_relu_``, ``batch_norm`` with
    the module's running statistics, momentum and eps, ``num_batches_tracked`` counted in train
    mode), without the per-module call machinery (hooks, ``__getattr__``). DM2C's step runs about a
    hundred such layer calls on batches of 128 × ≤ 32, where that machinery costs more than the
    arithmetic; the results are bit for bit those of ``nn.Sequential`` (tests/test_dm2c.py). Any
    other layer type, or a layer with hooks when the layer plan is made (at the first call), falls
    back to ``nn.Sequential.forward``; hooks on the sequence itself are always honoured."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.__dict__.get("_plan")
        if plan is None:
            plan = self.__dict__["_plan"] = self._make_plan()
        if not plan or self._forward_hooks or self._forward_pre_hooks:
            return super().forward(x)
        cudnn = torch.backends.cudnn.enabled
        for kind, m in plan:
            if kind == 0:
                params = m._parameters
                x = F.linear(x, params["weight"], params["bias"])
            elif kind == 1:
                x = torch._C._nn.leaky_relu_(x, m.negative_slope) if m.inplace else F.leaky_relu(x, m.negative_slope)
            else:
                params, buffers = m._parameters, m._buffers
                if m.training:
                    buffers["num_batches_tracked"].add_(1)
                x = torch.batch_norm(x, params["weight"], params["bias"], buffers["running_mean"],
                                     buffers["running_var"], m.training, m.momentum, m.eps, cudnn)
        return x

    def _make_plan(self) -> list[tuple[int, nn.Module]] | None:
        plan: list[tuple[int, nn.Module]] = []
        for m in self:
            if m._forward_hooks or m._forward_pre_hooks:
                return None
            if type(m) is nn.Linear:
                plan.append((0, m))
            elif type(m) is nn.LeakyReLU:
                plan.append((1, m))
            elif (type(m) is nn.BatchNorm1d and m.affine and m.track_running_stats and m.momentum is not None):
                plan.append((2, m))
            else:
                return None
        return plan


class DeepAE(nn.Module):
    """Fully connected autoencoder as in the reference: ``forward(x) -> (reconstruction, latent)``."""

    def __init__(self, dim: int, hiddens: Sequence[int], batchnorm: bool = True) -> None:
        super().__init__()
        widths = [dim, *hiddens]
        depth = len(hiddens)
        enc: list[nn.Module] = []
        for i in range(depth):
            enc.append(nn.Linear(widths[i], widths[i + 1]))
            if i < depth - 1:
                enc.append(nn.LeakyReLU(LEAK, inplace=True))
                if batchnorm:
                    enc.append(nn.BatchNorm1d(widths[i + 1]))
        dec: list[nn.Module] = []
        for i in range(depth, 0, -1):
            dec.append(nn.Linear(widths[i], widths[i - 1]))
            dec.append(nn.LeakyReLU(LEAK, inplace=True))
            if i > 1 and batchnorm:
                dec.append(nn.BatchNorm1d(widths[i - 1]))
        self.encoder = FastSequential(*enc)
        self.decoder = FastSequential(*dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(x)
        return self.decoder(latent), latent


def critic(latent: int, hidden: int) -> nn.Sequential:
    """The reference critic: ``Linear(L, h) → LeakyReLU(0.2) → Linear(h, 1)``."""
    return FastSequential(nn.Linear(latent, hidden), nn.LeakyReLU(LEAK, inplace=True), nn.Linear(hidden, 1))


class DM2CNet(nn.Module):
    """All DM2C modules: ``aes[0|1]`` (modality AEs, store order), ``g_ab``/``g_ba`` (mappings first →
    second / second → first), ``d_a``/``d_b`` (critics on the first / second latent space)."""

    def __init__(self, arch: Architecture, generator: torch.Generator) -> None:
        super().__init__()
        self.arch = arch
        # built without touching the global RNG (meta device), then initialised from ``generator``
        with torch.device("meta"):
            self.aes = nn.ModuleList([DeepAE(arch.dim, arch.hiddens, arch.batchnorm) for _ in range(2)])
            self.g_ab = DeepAE(arch.latent, arch.map_hiddens, arch.batchnorm)
            self.g_ba = DeepAE(arch.latent, arch.map_hiddens, arch.batchnorm)
            self.d_a = critic(arch.latent, arch.critic_hidden)
            self.d_b = critic(arch.latent, arch.critic_hidden)
        self.to_empty(device="cpu")
        self.init_parameters(generator)

    def init_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear/BatchNorm init, drawn from ``generator`` (not the global RNG)."""
        with torch.no_grad():
            for mod in self.modules():
                if isinstance(mod, nn.Linear):
                    nn.init.kaiming_uniform_(mod.weight, a=math.sqrt(5), generator=generator)
                    bound = 1.0 / math.sqrt(mod.in_features) if mod.in_features > 0 else 0.0
                    nn.init.uniform_(mod.bias, -bound, bound, generator=generator)
                elif isinstance(mod, nn.BatchNorm1d):
                    mod.reset_parameters()

    def generator_parameters(self) -> list[dict[str, Any]]:
        """The reference's two joint-phase groups: AEs, then mappings (lr set by the caller)."""
        return [
            {"params": [*self.aes[0].parameters(), *self.aes[1].parameters()], "name": "autoencoders"},
            {"params": [*self.g_ab.parameters(), *self.g_ba.parameters()], "name": "mappings"},
        ]

    def critic_parameters(self) -> list[nn.Parameter]:
        return [*self.d_a.parameters(), *self.d_b.parameters()]

    @torch.no_grad()
    def unify(self, x_a: torch.Tensor, x_b: torch.Tensor, target: int = 0) -> torch.Tensor:
        """Rows of both modalities in one latent space (``target`` 0: the first modality's), stacked
        first-modality rows first. Call with the modules in eval mode."""
        parts = []
        if len(x_a):
            z_a = self.aes[0].encoder(x_a)
            parts.append(z_a if target == 0 else self.g_ab(z_a)[0])
        if len(x_b):
            z_b = self.aes[1].encoder(x_b)
            parts.append(self.g_ba(z_b)[0] if target == 0 else z_b)
        if not parts:
            return x_a.new_zeros((0, self.arch.latent))
        return torch.cat(parts)


def check_benchmark(data: BenchmarkData, cfg: TrainConfig) -> None:
    """Errors for a benchmark DM2C cannot train on: modalities of different dims, a modality without
    training rows, fewer training rows than clusters (a missing ``train`` split)."""
    if "train" not in data.splits:
        raise DataError(f"the benchmark has no 'train' split (splits: {list(data.splits)}); DM2C trains on it.")
    dims = dict(data.dims)
    if len(set(dims.values())) != 1:
        raise DataError(
            f"modalities have different feature dims {dims}; DM2C feeds both through one mixed batch "
            "and needs one shared dimension: set [embed] dim to a common value (PCA to a shared dim)."
        )
    tr = data.splits["train"]
    for m in data.modalities:
        if tr.n(m) == 0:
            raise DataError(
                f"the train split has no rows of modality '{m}'; DM2C pre-trains one autoencoder per "
                "modality and needs training rows of both. Rebuild the benchmark (unpair) so both "
                "modalities keep training instances."
            )
    k = cfg.n_clusters or data.n_classes
    if tr.n() < k:
        raise DataError(
            f"the train split has {tr.n()} rows but k-means needs at least k = {k} (one per cluster); "
            "use a larger benchmark or set [train] n_clusters lower."
        )


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


class PhaseTimer:
    """Wall time per named part; on CUDA each part ends with a device synchronisation."""

    def __init__(self, device: torch.device, seconds: dict[str, float] | None = None) -> None:
        self.device = device
        self.seconds: dict[str, float] = dict(seconds or {})

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` to part ``name`` (a part timed elsewhere, e.g. in a worker)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


# ---------------------------------------------------------------------------------------------
# evaluation result
# ---------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """One evaluation: unified embeddings, k-means fitted on train, predictions, metrics."""

    epoch: int
    kmeans_seed: int
    kmeans: Any
    embeddings: dict[str, torch.Tensor]
    predictions: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float]]
    diagnostics: dict[str, float] = field(default_factory=dict)


def mixed_batch_order(flags: torch.Tensor, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """One epoch of shuffled mixed batches over pooled rows with modality ``flags`` (host, 0/1).

    Returns the row order (host) and per batch ``(start, n_first, n_second)``: rows
    ``order[start : start + n_first]`` are the batch's first-modality rows (in shuffled order), the
    next ``n_second`` its second-modality rows. One permutation is drawn from ``gen``."""
    n = len(flags)
    perm = torch.randperm(n, generator=gen)
    key = torch.div(torch.arange(n), batch_size, rounding_mode="floor") * 2 + flags[perm]
    order = perm[torch.argsort(key, stable=True)]
    n_batches = (n + batch_size - 1) // batch_size
    counts = torch.bincount(key, minlength=2 * n_batches).view(n_batches, 2).tolist()
    slices, start = [], 0
    for na, nb in counts:
        slices.append((start, na, nb))
        start += na + nb
    return order, slices


# ---------------------------------------------------------------------------------------------
# the faithful trainer
# ---------------------------------------------------------------------------------------------

EpochCallback = Callable[[str, int, dict[str, Any]], None]


class FaithfulTrainer:
    """The reference DM2C schedule on device-resident data.

    Parameters
    ----------
    cfg: the train config (its ``variant`` selects this class through the registry).
    data: the benchmark on its device (``train`` split required; ``test`` optional).
    checkpoint_dir: where checkpoints go (``None``: no checkpoints); a compatible ``last.pt`` there is
        resumed by :meth:`restore` (the estimator calls it).
    runlog: per-epoch rows are appended there (``epochs.jsonl`` / ``epochs.csv``).
    input_sha256: the input store's manifest sha256, recorded in and checked against checkpoints.
    callback: ``fn(phase, epoch, row)`` after each epoch's row is computed, before its checkpoint.
    """

    name: ClassVar[str] = "faithful"
    LOSS_TERMS: ClassVar[tuple[str, ...]] = ("loss_g", "rec_a", "rec_b", "cyc_a", "cyc_b", "cycrec_a", "cycrec_b", "adv")
    CRITIC_TERMS: ClassVar[tuple[str, ...]] = ("loss_d", "d_a", "d_b")

    def __init__(
        self,
        cfg: TrainConfig,
        data: BenchmarkData,
        *,
        checkpoint_dir: str | Path | None = None,
        runlog: RunLog | None = None,
        input_sha256: str | None = None,
        callback: EpochCallback | None = None,
    ) -> None:
        from mixbench.device import resolve_device

        self.cfg = cfg
        self.data = data
        self.device = resolve_device(cfg.device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.runlog = runlog
        self.input_sha256 = input_sha256
        self.callback = callback
        self.modalities = list(data.modalities)
        self._check_data()
        self.train_split = data.splits["train"]
        self.eval_splits = [s for s in ("train", "test") if s in data.splits]
        self.arch = Architecture.resolve(cfg, self.dim)
        self.n_clusters = cfg.n_clusters or data.n_classes
        # one seed -> one torch generator (init + batch order) and one numpy generator (k-means seeds)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.net = DM2CNet(self.arch, self.gen).to(self.device)
        # pooled training rows (first modality first), their modality flags on the host
        self.x_train, self.y_train, flags = self.train_split.pooled()
        self.flags_host = flags.cpu()
        self.phases = [f"pretrain-{m}" for m in self.modalities] + [JOINT]
        self.phase_index = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._restored_optimizers: tuple[int, dict[str, Any]] | None = None
        self._generator_params: list[torch.Tensor] = []
        self.timer = PhaseTimer(self.device)
        self.skipped_batches = 0
        self.last_eval: Evaluation | None = None
        self.last_good_checkpoint: Path | None = None
        self._labels_host = {s: self._pooled_labels(s) for s in self.eval_splits}

    # -- data checks ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(next(iter(self.data.dims.values())))

    def _check_data(self) -> None:
        check_benchmark(self.data, self.cfg)

    def _pooled_labels(self, split: str) -> np.ndarray:
        s = self.data.splits[split]
        return np.concatenate([s.y[m].cpu().numpy() for m in self.modalities]).astype(np.int64)

    # -- the run ----------------------------------------------------------------------------------
    def epochs_of(self, phase_index: int) -> int:
        return self.cfg.epochs if self.phases[phase_index] == JOINT else self.cfg.pretrain_epochs

    def run(self) -> Evaluation:
        """Run (or finish, after :meth:`restore`) every phase; returns the final evaluation."""
        with cpu_threads(self.intra_op_threads()):
            return self._run()

    def intra_op_threads(self) -> int | None:
        """Torch CPU threads for this run (None: leave torch's setting). A small model's ops are too
        small to split across threads, and extra threads only add synchronisation (and stall badly
        on a busy machine), so ``threads = 0`` picks 1 below ~16M multiply-adds per AE forward."""
        if self.device.type != "cpu":
            return None
        if self.cfg.threads:
            return self.cfg.threads
        widths = [self.arch.dim, *self.arch.hiddens]
        macs = 2 * self.cfg.batch_size * sum(a * b for a, b in zip(widths, widths[1:]))
        return 1 if macs < (1 << 24) else None

    def eval_mode(self) -> str:
        """Where the per-epoch k-means runs: ``sync``, ``thread`` or ``process``
        (``[train] eval_background``, :func:`background_eval`)."""
        return background_eval(self.cfg, self.device, self.intra_op_threads(), self.evaluations_due())

    def evaluations_due(self) -> int:
        """Evaluations the joint phase still has to run (every ``eval_every``-th epoch and the last)."""
        done = self.epoch if self.phases[self.phase_index] == JOINT else 0
        if JOINT not in self.phases[self.phase_index:]:
            return 0
        return sum(self._eval_due(e) for e in range(done, self.cfg.epochs))

    def _run(self) -> Evaluation:
        from .eval_queue import EvalQueue

        with EvalQueue(self.eval_mode(), self.intra_op_threads()) as queue:
            for pi in range(self.phase_index, len(self.phases)):
                if pi != self.phase_index:
                    self.phase_index, self.epoch = pi, 0
                phase = self.phases[pi]
                n_epochs = self.epochs_of(pi)
                if self.epoch >= n_epochs:
                    continue
                self._begin_phase(pi)
                log.info("%s: epochs %d..%d of %d", phase, self.epoch, n_epochs - 1, n_epochs)
                bar = tqdm(range(self.epoch, n_epochs), desc=phase, unit="epoch", disable=None, leave=False)
                for epoch in bar:
                    row, job = self._train_epoch(pi, epoch)
                    queue.push(row, job)
                    self._commit(queue.ready())
                    self.epoch = epoch + 1
                    last = self.epoch == n_epochs
                    every = self.cfg.checkpoint_every
                    if last or (every and self.epoch % every == 0):
                        self._commit(queue.ready(wait=True))  # a checkpoint holds every row, evaluated
                        self.save_checkpoint(phase_end=last)
                bar.close()
            self._commit(queue.ready(wait=True))
        if self.skipped_batches:
            log.info("skipped %d batch(es) in which a modality had fewer than %d rows (BatchNorm cannot train on "
                     "them); recorded as skipped_batches", self.skipped_batches, self.min_rows)
        return self.final_evaluation()

    def _commit(self, done: Iterator[tuple[dict[str, Any], Evaluation | None]]) -> None:
        """Rows whose evaluation has finished, in epoch order: into the history, run log and callback."""
        for row, ev in done:
            if ev is not None:
                row.update(self._eval_row(ev))
            self.history.append(row)
            if self.runlog is not None:
                self.runlog.append(row)
            if self.callback is not None:
                self.callback(row["phase"], row["epoch"], row)
            n_epochs = self.epochs_of(self.phases.index(row["phase"]))
            if row["epoch"] == n_epochs - 1 or row["epoch"] % max(1, n_epochs // 10) == 0:
                log.info("%s epoch %d: %s", row["phase"], row["epoch"], _short(row))

    def method_facts(self) -> dict[str, Any]:
        """Facts a variant records in metrics.json and report.md (the anchor variants: the anchor)."""
        return {}

    def _run_epoch(self, pi: int, epoch: int) -> dict[str, Any]:
        """One epoch and its evaluation, now: the epoch's full row."""
        row, job = self._train_epoch(pi, epoch)
        if job is not None:
            row.update(self._eval_row(job()))
        return row

    def _train_epoch(self, pi: int, epoch: int) -> tuple[dict[str, Any], Callable[[], Evaluation] | None]:
        """One epoch: its row (losses, seconds) and, when an evaluation is due, the job that finishes
        it (the embeddings are taken now, before the weights move on; see :meth:`evaluation_job`)."""
        phase = self.phases[pi]
        t0 = time.perf_counter()
        job = None
        if phase == JOINT:
            with self.timer("joint-train"):
                row = self.joint_epoch(epoch)
            seed = self.next_kmeans_seed()  # drawn every joint epoch, evaluated or not
            if self._eval_due(epoch):
                job = self.evaluation_job(epoch, seed)
        else:
            with self.timer(phase):
                row = self.pretrain_epoch(pi, epoch)
        row["seconds"] = round(time.perf_counter() - t0, 6)
        return {"phase": phase, "epoch": epoch, **row}, job

    def next_kmeans_seed(self) -> int:
        """The next k-means seed of this run's stream. One is drawn per joint epoch whether that epoch
        is evaluated or not, so epoch ``e`` always clusters with the stream's ``e``-th seed and the
        final figures do not depend on ``eval_every`` (final-epoch-only runs equal every-epoch runs)."""
        return int(self.rng.integers(2**31 - 1))

    def _eval_due(self, epoch: int) -> bool:
        every = self.cfg.eval_every
        last = epoch == self.cfg.epochs - 1
        return last or (every > 0 and (epoch + 1) % every == 0)

    def _begin_phase(self, pi: int) -> None:
        """Fresh optimisers for the phase (as the reference's separate runs), or the restored ones."""
        cfg = self.cfg
        phase = self.phases[pi]
        if phase == JOINT:
            self.optimizers = self.make_joint_optimizers()
        else:
            ae = self.net.aes[pi]
            self.optimizers = {
                "pretrain": torch.optim.Adam(ae.parameters(), lr=cfg.pretrain_lr[pi], betas=(cfg.b1, cfg.b2),
                                             weight_decay=cfg.pretrain_weight_decay, foreach=True)
            }
        gen_opt = self.optimizers.get("generator")
        self._generator_params = [p for g in gen_opt.param_groups for p in g["params"]] if gen_opt else []
        if self._restored_optimizers is not None and self._restored_optimizers[0] == pi:
            for name, state in self._restored_optimizers[1].items():
                self.optimizers[name].load_state_dict(state)
        self._restored_optimizers = None

    def make_joint_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.cfg
        groups = self.net.generator_parameters()
        groups[0]["lr"] = cfg.lr_g
        groups[1]["lr"] = cfg.lr_map
        if cfg.gan == "wasserstein":
            opt_g: torch.optim.Optimizer = torch.optim.RMSprop(groups, lr=cfg.lr_g, weight_decay=cfg.weight_decay,
                                                               foreach=True)
            opt_d: torch.optim.Optimizer = torch.optim.RMSprop(self.net.critic_parameters(), lr=cfg.lr_d,
                                                               weight_decay=cfg.weight_decay, foreach=True)
        else:
            opt_g = torch.optim.Adam(groups, lr=cfg.lr_g, betas=(cfg.b1, cfg.b2), weight_decay=cfg.weight_decay,
                                     foreach=True)
            opt_d = torch.optim.Adam(self.net.critic_parameters(), lr=cfg.lr_d, betas=(cfg.b1, cfg.b2),
                                     weight_decay=cfg.weight_decay, foreach=True)
        return {"generator": opt_g, "critic": opt_d}

    # -- batches ----------------------------------------------------------------------------------
    @property
    def min_rows(self) -> int:
        """Rows a modality needs in a batch (BatchNorm in train mode needs two)."""
        return 2 if self.arch.batchnorm else 1

    def pretrain_batches(self, n: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """A seeded permutation of ``n`` rows (on the device) and its batch slices."""
        perm = torch.randperm(n, generator=self.gen).to(self.device, non_blocking=True)
        b = self.cfg.batch_size
        slices = [(a, min(n, a + b)) for a in range(0, n, b)]
        return perm, slices

    def mixed_batches(self) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Shuffled mixed batches over the pooled training rows, each grouped by modality
        (:func:`mixed_batch_order`); the row order is moved to the device."""
        order, slices = mixed_batch_order(self.flags_host, self.cfg.batch_size, self.gen)
        return order.to(self.device, non_blocking=True), slices

    # -- pre-training -----------------------------------------------------------------------------
    def pretrain_epoch(self, pi: int, epoch: int) -> dict[str, Any]:
        ae = self.net.aes[pi]
        ae.train()
        x_all = self.train_split.x[self.modalities[pi]]
        opt = self.optimizers["pretrain"]
        perm, slices = self.pretrain_batches(len(x_all))
        xs = x_all[perm]
        losses = []
        for a, z in slices:
            if z - a < self.min_rows:
                self.skipped_batches += 1
                continue
            x = xs[a:z]
            rec, _ = ae(x)
            loss = F.mse_loss(rec, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        values = torch.stack(losses).cpu().numpy() if losses else np.zeros(0)
        self._check_finite(values, ("rec",), epoch)
        return {"rec": float(values.mean()) if len(values) else None, "steps": len(values)}

    # -- joint training -----------------------------------------------------------------------------
    def joint_epoch(self, epoch: int) -> dict[str, Any]:
        self.net.train()
        order, slices = self.mixed_batches()
        xs = self.x_train[order]
        g_terms: list[torch.Tensor] = []
        d_terms: list[torch.Tensor] = []
        g_steps: list[int] = []
        d_steps: list[int] = []
        for step, (start, na, nb) in enumerate(slices):
            if na < self.min_rows or nb < self.min_rows:
                self.skipped_batches += 1
                continue
            x_a = xs[start:start + na]
            x_b = xs[start + na:start + na + nb]
            terms, codes = self.generator_step(x_a, x_b)
            g_terms.append(terms)
            g_steps.append(step)
            if (step + 1) % self.cfg.critic_every == 0:
                d_terms.append(self.critic_step(codes))
                d_steps.append(step)
        g = torch.stack(g_terms).cpu().numpy() if g_terms else np.zeros((0, len(self.LOSS_TERMS)))
        d = torch.stack(d_terms).cpu().numpy() if d_terms else np.zeros((0, len(self.CRITIC_TERMS)))
        self._check_finite(g, self.LOSS_TERMS, epoch, steps=g_steps)
        self._check_finite(d, self.CRITIC_TERMS, epoch, steps=d_steps)
        row: dict[str, Any] = {"steps": len(g), "critic_steps": len(d)}
        row.update(self._named(self.LOSS_TERMS, g.mean(axis=0) if len(g) else None))
        row.update(self._named(self.CRITIC_TERMS, d.mean(axis=0) if len(d) else None))
        return row

    def generator_losses(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The reference generator objective on one batch: ``(G loss, loss terms, codes)``.

        Module calls are in the reference's order (it matters for BatchNorm running statistics)."""
        net, cfg = self.net, self.cfg
        ae_a, ae_b = net.aes[0], net.aes[1]
        rec_a, z_a = ae_a(x_a)
        rec_b, z_b = ae_b(x_b)
        ab, _ = net.g_ab(z_a)
        aba, _ = net.g_ba(ab)
        ba, _ = net.g_ba(z_b)
        bab, _ = net.g_ab(ba)
        rec_a_l = F.mse_loss(rec_a, x_a)
        rec_b_l = F.mse_loss(rec_b, x_b)
        cyc_a = F.l1_loss(z_a, aba)
        cyc_b = F.l1_loss(z_b, bab)
        cycrec_a = F.mse_loss(ae_a.decoder(aba), x_a)
        cycrec_b = F.mse_loss(ae_b.decoder(bab), x_b)
        if cfg.gan == "wasserstein":
            adv = -net.d_a(ba).mean() - net.d_b(ab).mean()
        else:
            la, lb = net.d_a(ba), net.d_b(ab)
            adv = (F.binary_cross_entropy_with_logits(la, torch.ones_like(la))
                   + F.binary_cross_entropy_with_logits(lb, torch.ones_like(lb)))
        loss = rec_a_l + rec_b_l + (cyc_a + cyc_b) * cfg.lambda1 + (cycrec_a + cycrec_b) + cfg.lambda3 * adv
        terms = torch.stack([loss, rec_a_l, rec_b_l, cyc_a, cyc_b, cycrec_a, cycrec_b, adv]).detach()
        return loss, terms, {"z_a": z_a, "z_b": z_b, "ab": ab, "ba": ba}

    def generator_step(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        opt = self.optimizers["generator"]
        opt.zero_grad(set_to_none=True)
        loss, terms, codes = self.generator_losses(x_a, x_b)
        loss.backward(inputs=self._generator_params)  # the critics' gradients are not needed here
        opt.step()
        return terms, codes

    def critic_step(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """One critic update on the (detached) codes of the generator step's forward pass."""
        net, cfg = self.net, self.cfg
        z_a, z_b = codes["z_a"].detach(), codes["z_b"].detach()
        ab, ba = codes["ab"].detach(), codes["ba"].detach()
        if cfg.gan == "wasserstein":
            d_a = net.d_a(ba).mean() - net.d_a(z_a).mean()
            d_b = net.d_b(ab).mean() - net.d_b(z_b).mean()
        else:
            ra, fa, rb, fb = net.d_a(z_a), net.d_a(ba), net.d_b(z_b), net.d_b(ab)
            bce = F.binary_cross_entropy_with_logits
            d_a = (bce(ra, torch.ones_like(ra)) + bce(fa, torch.zeros_like(fa))) / 2
            d_b = (bce(rb, torch.ones_like(rb)) + bce(fb, torch.zeros_like(fb))) / 2
        loss = (d_a + d_b) * cfg.lambda3
        opt = self.optimizers["critic"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cfg.gan == "wasserstein":
            with torch.no_grad():
                params = net.critic_parameters()
                torch._foreach_clamp_min_(params, -cfg.clip)
                torch._foreach_clamp_max_(params, cfg.clip)
        return torch.stack([loss, d_a, d_b]).detach()

    # -- evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, split: str | SplitTensors) -> torch.Tensor:
        """Unified embeddings of a split's rows (first modality's rows first), BatchNorm in eval mode."""
        s = self.data.splits[split] if isinstance(split, str) else split
        was_training = self.net.training
        self.net.eval()
        try:
            return self.unify(s)
        finally:
            self.net.train(was_training)

    def unify(self, s: SplitTensors) -> torch.Tensor:
        """The faithful unification: every row into one modality's latent space (``cfg.unify``)."""
        target = 0 if self.cfg.unify == "first" else 1
        return self.net.unify(s.x[self.modalities[0]], s.x[self.modalities[1]], target)

    def evaluate(self, epoch: int, kmeans_seed: int | None = None) -> Evaluation:
        """Embed train and test, cluster (:meth:`cluster`), all seven metrics on both."""
        return self.evaluation_job(epoch, kmeans_seed)()

    def evaluation_job(self, epoch: int, kmeans_seed: int | None = None) -> EvalJob:
        """Take the embeddings and draw the k-means seed now; return the rest of :meth:`evaluate`
        as an :class:`~train.eval_queue.EvalJob`: the k-means (remote part, depends on nothing that
        training changes afterwards; on CPU picklable for a worker process, its tensors carried as
        numpy arrays, without a copy in this process) and the metrics (finish part, in this process)."""
        from .eval_cluster import cluster_runs, embeddings_to_host, kmeans_from_host
        from .eval_queue import EvalJob

        with self.timer("eval-embed"):
            emb = {s: self.embed(s) for s in self.eval_splits}
        seed = self.next_kmeans_seed() if kmeans_seed is None else int(kmeans_seed)
        portable = self.device.type == "cpu"

        def finish(result: tuple[list[tuple[Any, dict[str, np.ndarray]]], float]) -> Evaluation:
            (km, preds), = result[0]
            self.timer.add("kmeans", result[1])
            return self.finish_evaluation(epoch, seed, emb, kmeans_from_host(km) if portable else km, preds)

        sent = embeddings_to_host([emb]) if portable else [emb]
        return EvalJob(cluster_runs, ([self.cluster_spec()], sent, [seed], portable), finish)

    def finish_evaluation(self, epoch: int, seed: int, emb: dict[str, torch.Tensor], km: Any,
                          preds: dict[str, np.ndarray]) -> Evaluation:
        """The seven metrics on every split and the diagnostics, from the embeddings and clusters."""
        from .metrics import clustering_metrics

        with self.timer("metrics"):
            metrics = {s: clustering_metrics(self._labels_host[s], preds[s]) for s in self.eval_splits}
            diag = self._diagnostics(preds)
        diag["inertia"] = float(km.inertia_)
        ev = Evaluation(epoch=epoch, kmeans_seed=seed, kmeans=km, embeddings=emb, predictions=preds,
                        metrics=metrics, diagnostics=diag)
        self.last_eval = ev
        return ev

    def cluster_spec(self) -> ClusterSpec:
        """The evaluation k-means as plain data (:class:`~train.eval_cluster.ClusterSpec`): the
        faithful settings of the config, fitted on every train row; variants override it."""
        from .eval_cluster import ClusterSpec

        cfg = self.cfg
        return ClusterSpec(self.n_clusters, cfg.n_init, cfg.kmeans_max_iter, cfg.kmeans_tol, str(self.device),
                           tuple(self.eval_splits))

    def kmeans(self, seed: int) -> Any:
        """The evaluation k-means (the faithful settings: n_init, max_iter, tol of the config)."""
        return self.cluster_spec().kmeans(seed)

    def cluster(self, emb: dict[str, torch.Tensor], seed: int) -> tuple[Any, dict[str, np.ndarray]]:
        """The evaluation k-means fitted (:meth:`cluster_spec`) and every split's labels."""
        return self.cluster_spec()(emb, seed)

    def _diagnostics(self, preds: dict[str, np.ndarray]) -> dict[str, float]:
        """Cluster-modality NMI and per-modality ACC of the last split evaluated (test when present):
        how much the clusters split by modality. ACC of a modality's rows is matched within those rows,
        as the k-means baselines do (train.baselines)."""
        from .metrics import clustering_metrics

        split = self.eval_splits[-1]
        s = self.data.splits[split]
        y, p = self._labels_host[split], preds[split]
        flags = np.concatenate([np.full(s.n(m), i) for i, m in enumerate(self.modalities)])
        out = {f"{split}_modality_nmi": clustering_metrics(flags, p)["nmi"] if len(set(flags.tolist())) > 1 else 0.0}
        for i, m in enumerate(self.modalities):
            sel = flags == i
            if sel.any():
                out[f"{split}_acc_{m}"] = clustering_metrics(y[sel], p[sel])["acc"]
        return out

    def _eval_row(self, ev: Evaluation) -> dict[str, Any]:
        row: dict[str, Any] = {"kmeans_seed": ev.kmeans_seed}
        for split, m in ev.metrics.items():
            for k, v in m.items():
                row[f"{split}_{k}"] = v
        row.update(ev.diagnostics)
        return row

    def final_evaluation(self) -> Evaluation:
        """The evaluation of the final state: the last epoch's (recomputed with its recorded k-means
        seed when training was resumed from a finished checkpoint), or a new one after pre-training only."""
        final_epoch = self.cfg.epochs - 1
        if self.last_eval is not None and self.last_eval.epoch == final_epoch:
            return self.last_eval
        seed = None
        for row in reversed(self.history):
            if row["phase"] == JOINT and row["epoch"] == final_epoch and "kmeans_seed" in row:
                seed = row["kmeans_seed"]
                break
        return self.evaluate(final_epoch, kmeans_seed=seed)

    # -- loss checks --------------------------------------------------------------------------------
    def _named(self, names: Sequence[str], values: np.ndarray | None) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for i, name in enumerate(names):
            key = self._term_key(name)
            out[key] = None if values is None else float(values[i])
        return out

    def _term_key(self, name: str) -> str:
        """``rec_a`` → ``rec_image`` (modality names of the store)."""
        if name.endswith("_a"):
            return f"{name[:-2]}_{self.modalities[0]}"
        if name.endswith("_b"):
            return f"{name[:-2]}_{self.modalities[1]}"
        return name

    def _check_finite(self, values: np.ndarray, names: Sequence[str], epoch: int, steps: Sequence[int] | None = None) -> None:
        if values.size == 0 or np.isfinite(values).all():
            return
        bad_row, bad_col = (int(v[0]) for v in np.nonzero(~np.isfinite(values.reshape(len(values), -1))))
        step = steps[bad_row] if steps is not None and bad_row < len(steps) else bad_row
        phase = self.phases[self.phase_index]
        kept = (f"the last good checkpoint is {self.last_good_checkpoint}" if self.last_good_checkpoint
                else "no checkpoint was written before it")
        raise TrainingDiverged(
            f"DM2C diverged: loss '{self._term_key(names[bad_col])}' is {values.reshape(len(values), -1)[bad_row, bad_col]} "
            f"at phase {phase}, epoch {epoch}, step {step} (seed {self.cfg.seed}); training stopped and {kept}. "
            "Check the input scaling (embed whiten = true) or lower the learning rates."
        )

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly as an uninterrupted one."""
        from .checkpoint import FORMAT, VERSION

        return {
            "format": FORMAT,
            "version": VERSION,
            "variant": self.cfg.variant,
            "phase": self.phases[self.phase_index],
            "phase_index": self.phase_index,
            "epoch": self.epoch,
            "model": self.net.state_dict(),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "rng": {"torch": self.gen.get_state(), "numpy": self.rng.bit_generator.state},
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.config_hash(),
            "input": {"manifest_sha256": self.input_sha256, "dims": dict(self.data.dims),
                      "modalities": list(self.modalities),
                      "rows": {s: {m: t.n(m) for m in self.modalities} for s, t in self.data.splits.items()}},
            "architecture": self.arch.to_dict(),
            "history": list(self.history),
            "timings": dict(self.timer.seconds),
            "skipped_batches": self.skipped_batches,
            "cpu_threads": self.effective_threads(),
        }

    def effective_threads(self) -> int | None:
        """The torch CPU threads the training runs on (None on a GPU): recorded in checkpoints."""
        if self.device.type != "cpu":
            return None
        return self.intra_op_threads() or torch.get_num_threads()

    def save_checkpoint(self, phase_end: bool = False) -> Path | None:
        """Atomically write ``last.pt`` (and ``<phase>.pt`` at a phase end)."""
        if self.checkpoint_dir is None:
            return None
        from .checkpoint import save_checkpoint

        state = self.state_dict()
        path = self.checkpoint_dir / "last.pt"
        save_checkpoint(path, state)
        if phase_end:
            save_checkpoint(self.checkpoint_dir / f"{self.phases[self.phase_index]}.pt", state)
        if self.runlog is not None:
            self.runlog.write_csv()
        self.last_good_checkpoint = path
        return path

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint written by :meth:`state_dict` (check it first with
        :func:`train.checkpoint.check_compatible`)."""
        self.net.load_state_dict(state["model"])
        self.gen.set_state(state["rng"]["torch"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.phase_index = int(state["phase_index"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.timer = PhaseTimer(self.device, state.get("timings"))
        self.skipped_batches = int(state.get("skipped_batches", 0))
        self._restored_optimizers = (self.phase_index, state["optimizers"])
        if self.runlog is not None:
            self.runlog.restore(self.history)

    def restore(self, path: str | Path | None = None) -> bool:
        """Resume from ``path`` (default: ``checkpoint_dir/last.pt``) when it exists; True if resumed.

        A checkpoint of another config, variant, input store or dimension is refused with the
        fields that differ."""
        from .checkpoint import check_compatible, load_checkpoint

        if path is None:
            if self.checkpoint_dir is None:
                return False
            path = self.checkpoint_dir / "last.pt"
        path = Path(path)
        if not path.exists():
            return False
        state = load_checkpoint(path, map_location="cpu")  # load_state_dict moves tensors to the device
        check_compatible(state, self.cfg, dims=dict(self.data.dims), input_sha256=self.input_sha256,
                         variant=self.cfg.variant, path=path)
        saved, now = state.get("cpu_threads"), self.effective_threads()
        if saved is not None and now is not None and saved != now:
            # threads = 0 (auto) on a machine with another core count: the config matches, the numbers may not
            log.warning("resuming %s under %d CPU thread(s), the checkpoint was written under %d: the run stays valid "
                        "but is no longer bit-identical to an uninterrupted one; set [train] threads = %d to keep it so",
                        path, now, saved, saved)
        self.load_state_dict(state)
        self.last_good_checkpoint = path
        log.info("resuming from %s: phase %s, %d epoch(s) done", path, state["phase"], state["epoch"])
        return True


#: ``eval_background = "auto"`` uses a worker process from this many evaluations on: starting it
#: (an interpreter importing torch, about 2 s, overlapped with pre-training) must pay for itself.
AUTO_PROCESS_MIN_EVALS = 20


def background_eval(cfg: TrainConfig, device: torch.device, threads: int | None, evaluations: int = 0) -> str:
    """``[train] eval_background`` resolved to an :class:`~train.eval_queue.EvalQueue` mode.

    ``sync`` on an accelerator (its kernels run asynchronously already) and for ``off``; ``thread``
    for ``thread`` (or its older spelling ``on``); ``process`` for ``process``; ``auto``:
    ``process`` when training uses one CPU thread, the process may use another core and at least
    :data:`AUTO_PROCESS_MIN_EVALS` evaluations are due, else ``sync``."""
    mode = cfg.eval_background
    if device.type != "cpu" or mode == "off":
        return "sync"
    if mode in ("on", "thread"):
        return "thread"
    if mode == "process":
        return "process"
    from mixbench.device import available_cores

    cores = available_cores()
    return "process" if threads == 1 and cores > 1 and evaluations >= AUTO_PROCESS_MIN_EVALS else "sync"


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for a block and restore it afterwards (``None``: no change)."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _short(row: dict[str, Any]) -> str:
    keys = ("rec", "loss_g", "loss_d", "train_acc", "test_acc", "test_nmi")
    return ", ".join(f"{k} {row[k]:.4f}" for k in keys if isinstance(row.get(k), float))
