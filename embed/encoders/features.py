"""``features``: the modality already holds ``feat`` (e.g. precomputed CNN/LDA features);
it is copied through unchanged (cast to the store's feature dtype)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from mixbench.config import option
from mixbench.errors import DataError

from .base import EncoderConfig, ValueEncoder


@dataclasses.dataclass(frozen=True)
class FeaturesConfig(EncoderConfig):
    """``encoder = "features"``: pass the existing ``feat`` column through."""

    name: ClassVar[str] = "features"
    inputs: ClassVar[tuple[str, ...]] = ("feat",)

    encoder: str = option("features", "encoder name")


class Passthrough(ValueEncoder):
    """Copies ``feat`` rows (float32 out; the writer casts to the store dtype)."""

    input_kind = "feat"

    def __init__(self, cfg: FeaturesConfig | None = None, device: torch.device | None = None, **_: Any) -> None:
        super().__init__(cfg or FeaturesConfig(), device or torch.device("cpu"))
        self._dim: int | None = None
        self._src_dtype = ""

    def set_input_dim(self, dim: int, dtype: str = "") -> None:
        self._dim = int(dim)
        self._src_dtype = dtype

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise DataError("features: input dimension unknown (set_input_dim was not called).")
        return self._dim

    def encode(self, values: list[str] | np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"encoder": "features", "dim": self._dim, "source_dtype": self._src_dtype,
                "config": self.cfg.to_dict()}
