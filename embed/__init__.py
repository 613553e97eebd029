"""embed: encoders (image/text towers, CNN backbones, classic text features) and ``reduce``, the
exact PCA to a shared dimension fitted on the train split.

``embed(src, out, config)`` is the stage: it reads a paired (or benchmark) store, encodes the
modalities that have an encoder (``embed.encode``), fits one PCA per modality on the fit split
and writes a feature store. ``PCA`` is the estimator (scikit-learn style) it uses.
Heavy imports (torch) happen on first use of ``embed``/``PCA``, so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import EmbedConfig

if TYPE_CHECKING:
    from .reduce import PCA
    from .stage import embed

__all__ = ["EmbedConfig", "PCA", "embed", "list_encoders"]


def list_encoders() -> list[str]:
    """Names of the available encoders (``mixbench list encoders``)."""
    try:
        from .encoders import list_encoders as _list
    except ModuleNotFoundError as exc:
        if exc.name not in ("embed.encoders", f"{__name__}.encoders"):
            raise
        return ["features"]
    return list(_list())


def __getattr__(name: str) -> Any:
    if name == "embed":
        from .stage import embed as fn

        return fn
    if name == "PCA":
        from .reduce import PCA as cls

        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
