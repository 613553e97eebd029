"""train: DM2C and its k-means baselines on a benchmark store.

- :class:`TrainConfig` — the ``[train]`` keys (= CLI flags = estimator settings).
- :class:`DM2C` — scikit-learn-style estimator: ``fit(store_or_data)``, ``transform``, ``predict``, ``score``;
  :class:`MvCLN` and :class:`SURE` the same for the partially aligned methods (:mod:`train.mvcln`).
- :func:`train` — the stage: benchmark store → run folder (metrics.json, report.md, epochs.jsonl/csv,
  plots, checkpoints, run.json).
- :func:`list_methods` — the training methods (``[train] method``; ``dm2c`` by default), see
  :mod:`train.registry` for how to add one.
- :func:`list_variants` — the registered DM2C variants (``faithful`` = the reference code;
  ``dm2c-anchor`` and ``dm2c-linked``, see :mod:`train.variants`).
"""

from .config import TrainConfig
from .dm2c import FaithfulTrainer, TrainingDiverged
from .registry import Variant, get_variant, list_variants, register_variant
from . import variants  # noqa: F401  (registers the DM2C variants: faithful, dm2c-anchor, dm2c-linked)
from . import dm2c_method  # noqa: F401  (registers method "dm2c")
from . import tac  # noqa: F401  (registers methods "concat-kmeans", "tac", "dxmc")
from .retrieval import methods as _retrieval_methods  # noqa: F401  (registers retrieval-cca, -hash, -twotower)
from . import mvcln  # noqa: F401  (registers methods "mvcln" and "sure")
from .registry import Method, MethodResult, RunContext, get_method, list_methods, register_method
from .estimator import DM2C, SURE, MvCLN
from .stage import train

__all__ = [
    "DM2C",
    "MvCLN",
    "SURE",
    "Method",
    "MethodResult",
    "RunContext",
    "get_method",
    "list_methods",
    "register_method",
    "FaithfulTrainer",
    "TrainConfig",
    "TrainingDiverged",
    "Variant",
    "get_variant",
    "list_variants",
    "register_variant",
    "train",
]
