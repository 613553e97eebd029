"""``[embed]`` configuration: which encoder per modality, and the PCA to a shared dimension.

Every field is, with the same spelling, a recipe key, a ``mixbench embed`` flag (the nested
``encoders`` table is set with ``--set encoders.image.encoder=open_clip``) and a key in the
feature store's lineage::

    [embed]
    dim = 10                 # shared PCA dimension (0: no PCA)
    standardize = false
    [embed.encoders.image]   # a modality without an entry must already have `feat`
    encoder = "open_clip"
    model = "ViT-B-32"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mixbench.config import Config, option
from mixbench.errors import ConfigError

FEAT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class EmbedConfig(Config):
    """Settings of the embed stage.

    The PCA is exact: float64 statistics summed over the ``fit_split`` shards in shard order,
    one eigendecomposition, the same result on one process or under ``torchrun``.
    """

    section: ClassVar[str] = "embed"

    encoders: dict[str, dict[str, Any]] = option(
        {},
        "modality → encoder table, e.g. [embed.encoders.image] encoder = \"open_clip\"; a modality "
        "without an entry must already have `feat` in the input store and is passed through",
    )
    text_source: dict[str, Any] = option(
        {}, "give an image-only store a text half before the PCA (embed.textspace, TAC's WordNet nouns): "
            "[embed.text_source] source = \"wordnet-nouns\"; {} = off"
    )
    dim: int = option(0, "shared PCA dimension of every modality (0: no PCA, features copied)", low=0)
    standardize: bool = option(
        False, "z-score every input feature with the fit split's mean/std before PCA (constant features: scale 1)"
    )
    whiten: bool = option(False, "scale each principal component to unit variance (as sklearn's PCA(whiten=True))")
    unit_scale: bool = option(
        False, "divide every PCA component by one number per modality (the root mean component variance): the "
               "components average unit variance and the modality's geometry is kept (whiten equalises each one)"
    )
    small_n: str = option(
        "unit_scale", "when whiten = true but the PCA is fitted on fewer rows than features (n < d): 'unit_scale' "
                      "scales the modality by one number instead (whitening inflates the components that fit the "
                      "fit rows' own noise, so held-out rows come out shrunk; README, embed), 'whiten' whitens anyway",
        choices=("unit_scale", "whiten"))
    log_ratio: list[str] = option(
        [], "modalities whose features are compositions (non-negative parts: topic proportions, histograms): each "
            "row is closed to sum 1 and mapped by the centred log-ratio log(p + eps) - mean log(p + eps) before "
            "the PCA (embed.logratio)"
    )
    log_ratio_eps: float = option(1e-6, "pseudo-proportion added before the log in log_ratio (keeps zero parts "
                                        "finite; raise it for sparse histograms)", low=0.0)
    fit_split: str = option("train", "split the PCA (and standardisation) is fitted on, applied to every split; "
                                     "'all': every split's rows (transductive: the test rows shape the PCA, as "
                                     "DM2C's authors appear to have done)")
    dtype: str = option("float32", "dtype of the output features", choices=FEAT_DTYPES)
    device: str = option("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    seed: int = option(0, "seed passed to the encoders (the PCA itself is deterministic)")
    max_reject_fraction: float = option(
        0.05, "encoders: fail when more than this fraction of a split's rows is rejected", low=0.0, high=1.0
    )

    def validate(self) -> None:
        if self.whiten and self.unit_scale:
            raise ConfigError("[embed] whiten and unit_scale are exclusive (whiten scales each component to unit "
                              "variance, unit_scale all of them by one number per modality); set one to false.")
        if self.unit_scale and self.dim == 0:
            raise ConfigError("[embed] unit_scale = true scales PCA components: set dim > 0, or unit_scale = false.")
        if self.whiten and self.dim == 0:
            raise ConfigError(
                "[embed] whiten = true needs a PCA: set dim > 0 (the number of components), or whiten = false."
            )
        if not self.fit_split:
            raise ConfigError("[embed] fit_split = '': name the split the PCA is fitted on, e.g. 'train'.")
        if self.log_ratio and self.log_ratio_eps == 0.0:
            raise ConfigError("[embed] log_ratio_eps = 0 takes log(0) of any zero part; use a small positive value, "
                              "e.g. 1e-6.")
        if self.text_source:
            from .textspace import TextSourceConfig

            TextSourceConfig.from_dict(self.text_source, "[embed.text_source]")
        for modality, table in self.encoders.items():
            if "encoder" not in table:
                raise ConfigError(
                    f"[embed] encoders.{modality}: no 'encoder' key; name one (see `mixbench list encoders`), "
                    f"e.g. --set encoders.{modality}.encoder=open_clip."
                )

    @property
    def reduces(self) -> bool:
        """True when features go through a fitted transform (PCA and/or standardisation)."""
        return self.dim > 0 or self.standardize
