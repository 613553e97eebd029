"""The evaluation k-means of several DM2C runs at once (:class:`train.dm2c_stacked.StackedTrainer`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def cluster_many(trainers: Sequence[Any], embs: list[dict[str, torch.Tensor]], seeds: list[int]
                 ) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """Each run's k-means (its trainer's settings and ``seeds[i]``) on its train embedding, with
    ``predict`` on the other splits: what :meth:`FaithfulTrainer.cluster` returns, per run."""
    return [t.cluster(emb, seed) for t, emb, seed in zip(trainers, embs, seeds)]
