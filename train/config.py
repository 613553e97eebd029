"""``[train]`` configuration: one frozen dataclass whose fields are the recipe keys, the CLI flags
(``mixbench train --pretrain-epochs 150``), the estimator's keyword arguments
(``DM2C(pretrain_epochs=150)``) and the config recorded in the run's lineage.

The defaults are the reference DM2C protocol (jiangyangby/DM2C ``code/``: ``train.py`` and the
README's settings): AE pre-training 150 epochs per modality (Adam, lr 1e-4 image / 1e-5 text,
betas (0.5, 0.999), weight decay 1e-4), joint training 220 epochs (RMSprop, AEs at ``lr_g`` 1e-4,
mappings at ``lr_map`` 5e-4, critics at ``lr_d`` 5e-5, weight decay 0, λ1 = 1, λ3 = 0.5, critic every
5th iteration, weight clipping ±0.05), k-means (20 inits, 1000 iterations, tol 5e-5) every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mixbench.config import Config, option
from mixbench.errors import ConfigError

#: Fields that do not change the trained state: a checkpoint written under other values of these
#: may be resumed (everything else must match exactly). ``threads`` is not one of them: the number
#: of CPU threads changes how matrix products are split, so the numbers (issue 10); a checkpoint
#: written under another ``threads`` is refused, naming the field.
NON_TRAINING_FIELDS = ("device", "plots", "baselines", "checkpoint_every", "eval_background")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Settings of the train stage (DM2C and its k-means baselines)."""

    section: ClassVar[str] = "train"

    method: str = option("dm2c", "training method (see `mixbench list methods`): 'dm2c' (DM2C and its variants) or a "
                                 "backend registered beside it")
    method_options: dict[str, Any] = option({}, "options of the chosen method other than dm2c (a table; see "
                                                "`mixbench list methods -v`)")
    variant: str = option("faithful", "DM2C variant (see `mixbench list variants`); 'faithful' = the reference code")
    variant_options: dict[str, Any] = option({}, "options of the chosen variant (a table; the faithful variant has none)")
    seed: int = option(0, "seed of model init, batch order and k-means", low=0)
    device: str = option("auto", "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'")
    # -- architecture ------------------------------------------------------------------------
    hiddens: list[int] = option([], "AE layer widths, last = latent dim L (empty: rule of train.dm2c.default_hiddens)", low=1)
    map_hiddens: list[int] = option([], "cross-modal mapping AE widths, last must equal L (empty: [L, 2L, L])", low=1)
    critic_hidden: int = option(0, "critic hidden width (0: max(1, L // 4), the reference's L/4)", low=0)
    batchnorm: bool = option(True, "BatchNorm after each hidden layer of every AE (reference: true)")
    # -- AE pre-training ---------------------------------------------------------------------
    pretrain_epochs: int = option(150, "AE pre-training epochs per modality", low=0)
    pretrain_lr: list[float] = option([1e-4, 1e-5], "pre-training Adam lr per modality, in store order (image, text)", low=0, low_open=True)
    pretrain_weight_decay: float = option(1e-4, "pre-training Adam weight decay", low=0)
    b1: float = option(0.5, "Adam beta1 (pre-training; joint phase with gan = 'naive')", low=0, high=1, high_open=True)
    b2: float = option(0.999, "Adam beta2", low=0, high=1, high_open=True)
    # -- joint training ----------------------------------------------------------------------
    epochs: int = option(220, "joint training epochs", low=0)
    batch_size: int = option(128, "mini-batch size (mixed rows; pre-training: rows of one modality)", low=2)
    lr_g: float = option(1e-4, "joint lr of the two modality AEs (the reference's lr_g)", low=0, low_open=True)
    lr_map: float = option(5e-4, "joint lr of the cross-modal mappings (the reference's lr_ae flag)", low=0, low_open=True)
    lr_d: float = option(5e-5, "critic lr", low=0, low_open=True)
    weight_decay: float = option(0.0, "joint-phase weight decay (generator and critic optimisers)", low=0)
    lambda1: float = option(1.0, "weight of the L1 latent cycle losses", low=0)
    lambda3: float = option(0.5, "weight of the adversarial losses (generator and critic)", low=0)
    gan: str = option("wasserstein", "adversarial loss: 'wasserstein' (RMSprop, weight clipping) or 'naive' (BCE, Adam)",
                      choices=("wasserstein", "naive"))
    critic_every: int = option(5, "update the critics every N-th generator iteration", low=1)
    clip: float = option(0.05, "critic weight clipping bound (wasserstein)", low=0, low_open=True)
    unify: str = option("first", "latent space the embeddings are unified into: the first (image) or second modality's",
                        choices=("first", "second"))
    # -- evaluation --------------------------------------------------------------------------
    eval_every: int = option(1, "evaluate (embed + k-means + metrics) every N joint epochs; 0: final epoch only (the final figures do not depend on it)", low=0)
    eval_background: str = option("auto", "CPU only: where each evaluation's k-means runs while training goes on "
                                  "(same results in every mode, train.eval_queue): off (in the training "
                                  "process, between epochs), process (a worker process on another core), "
                                  "thread (a background thread; shares the GIL, gains are uneven; 'on' is its "
                                  "older name), auto (process when training uses one thread, another core is "
                                  "free and at least 20 evaluations are due, else off)",
                                  choices=("auto", "process", "thread", "on", "off"))
    n_clusters: int = option(0, "k of k-means (0: the number of classes of the store)", low=0)
    n_init: int = option(20, "k-means restarts", low=1)
    kmeans_max_iter: int = option(1000, "k-means iteration cap", low=1)
    kmeans_tol: float = option(5e-5, "k-means tolerance", low=0)
    baselines: bool = option(True, "also run the k-means baselines on the same store")
    threads: int = option(0, "CPU only: torch intra-op threads during training (0: auto, 1 thread for small models "
                          "whose per-op work is too small to split, torch's default otherwise)", low=0)
    # -- run folder --------------------------------------------------------------------------
    checkpoint_every: int = option(25, "checkpoint every N epochs of each phase (0: only at phase ends)", low=0)
    plots: bool = option(True, "write plots (needs matplotlib; skipped with a log line without it)")

    def validate(self) -> None:
        from .registry import get_variant, method_options

        if self.method == "dm2c" and self.method_options:
            raise ConfigError(
                f"[{self.section}] method_options = {self.method_options!r}: DM2C takes its settings as [train] keys "
                "and its variant's as variant_options; method_options is for the other methods."
            )
        if self.method != "dm2c" and self.variant_options:
            raise ConfigError(
                f"[{self.section}] variant_options is for DM2C variants; method {self.method!r} takes its settings "
                "from [train] method_options."
            )
        method_options(self)
        if len(self.pretrain_lr) != 2:
            raise ConfigError(
                f"[{self.section}] pretrain_lr = {self.pretrain_lr!r}: must hold two learning rates, one per "
                "modality in store order (image, text), e.g. [1e-4, 1e-5]."
            )
        if self.map_hiddens and self.hiddens and self.map_hiddens[-1] != self.hiddens[-1]:
            raise ConfigError(
                f"[{self.section}] map_hiddens = {self.map_hiddens!r}: the last width must equal the latent dim "
                f"(hiddens[-1] = {self.hiddens[-1]}); the mappings go from one latent space to the other."
            )
        variant = get_variant(self.variant, where=f"[{self.section}] variant")
        variant.options_cls.from_dict(self.variant_options, where=f"[{self.section}] variant_options ({self.variant})")

    def options(self) -> Config:
        """The chosen variant's options, as its own config class."""
        from .registry import get_variant

        return get_variant(self.variant).options_cls.from_dict(self.variant_options)
