"""The encoder registry: a recipe names one encoder per modality, e.g.::

    [embed.encoders.image]
    encoder = "open_clip"
    model = "ViT-B-32"
    pretrained = "laion2b_s34b_b79k"

    [embed.encoders.text]
    encoder = "tfidf"
    max_features = 4096

Each encoder has its own config class (unknown keys fail with the allowed list). ``create_encoder``
loads weights and checks files (paths, sha256, model names) before anything is written.

=========== ======================= =======================================================
encoder     reads                   what
=========== ======================= =======================================================
open_clip   image (path/pixels),    an open_clip tower (tag, hf-hub id or local file)
            text
cnn         image                   torchvision/timm backbone, pooled penultimate layer
tfidf       text, feat (tags)       TF-IDF fitted on the train split
bow         text, feat (tags)       term counts over a train-fitted vocabulary
features    feat                    pass the existing features through
=========== ======================= =======================================================
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mixbench.errors import ConfigError

from .base import Encoder, EncoderConfig, ImageEncoder, ValueEncoder
from .clip import ModelCache, OpenClipConfig
from .cnn import CnnConfig
from .features import FeaturesConfig
from .text import BowConfig, TfidfConfig

_CONFIGS: dict[str, type[EncoderConfig]] = {
    "open_clip": OpenClipConfig,
    "cnn": CnnConfig,
    "tfidf": TfidfConfig,
    "bow": BowConfig,
    "features": FeaturesConfig,
}


def list_encoders() -> list[str]:
    """Names a recipe can use in ``[embed.encoders.<modality>] encoder = ...``."""
    return list(_CONFIGS)


def encoder_inputs(name: str) -> tuple[str, ...]:
    """What an encoder reads: some of ``image``, ``text``, ``feat``."""
    return _config_class(name, "[embed.encoders]").inputs


def _config_class(name: str, where: str) -> type[EncoderConfig]:
    if name in _CONFIGS:
        return _CONFIGS[name]
    close = difflib.get_close_matches(str(name), list(_CONFIGS), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"{where} encoder = {name!r}: unknown encoder.{hint} Encoders: {', '.join(_CONFIGS)}.")


def make_encoder_config(table: Mapping[str, Any] | EncoderConfig, where: str = "[embed.encoders]") -> EncoderConfig:
    """Build and check an encoder's config from its recipe table (``encoder`` picks the class)."""
    if isinstance(table, EncoderConfig):
        return table
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table with an 'encoder' key, got {table!r}.")
    if "encoder" not in table:
        raise ConfigError(f"{where}: 'encoder' is required; one of {', '.join(_CONFIGS)}.")
    cls = _config_class(str(table["encoder"]), where)
    return cls.from_dict(table, where)


def create_encoder(
    cfg: EncoderConfig | Mapping[str, Any],
    device: torch.device | str = "cpu",
    *,
    input_kind: str | None = None,
    base_dir: str | Path = ".",
    cache: ModelCache | None = None,
    where: str = "[embed.encoders]",
) -> Encoder:
    """Instantiate an encoder on ``device`` for ``input_kind`` (``image``/``text``/``feat``;
    default: the encoder's first input). Loads weights; checks files and names."""
    cfg = make_encoder_config(cfg, where)
    device = torch.device(device)
    kind = input_kind or cfg.inputs[0]
    if kind not in cfg.inputs:
        raise ConfigError(
            f"{where} encoder = {cfg.encoder!r} reads {' or '.join(cfg.inputs)}, but this modality holds "
            f"{_KIND_WORDS.get(kind, kind)}. Choose an encoder for it: "
            f"{', '.join(n for n, c in _CONFIGS.items() if kind in c.inputs)}."
        )
    base = Path(base_dir)
    if isinstance(cfg, OpenClipConfig):
        from .clip import OpenClipImageEncoder, OpenClipTextEncoder

        cls = OpenClipImageEncoder if kind == "image" else OpenClipTextEncoder
        return cls(cfg, device, base_dir=base, cache=cache, where=where)
    if isinstance(cfg, CnnConfig):
        from .cnn import CnnEncoder

        return CnnEncoder(cfg, device, base_dir=base, where=where)
    if isinstance(cfg, BowConfig):
        from .text import TextVectorizer

        return TextVectorizer(cfg, device, input_kind=kind)
    if isinstance(cfg, FeaturesConfig):
        from .features import Passthrough

        return Passthrough(cfg, device)
    raise ConfigError(f"{where}: no encoder class for {cfg.encoder!r}.")  # pragma: no cover


_KIND_WORDS = {
    "image": "images (a 'path' or 'pixels' column)",
    "text": "strings (a 'text' column)",
    "feat": "vectors (a 'feat' column)",
}

__all__ = [
    "Encoder",
    "EncoderConfig",
    "ImageEncoder",
    "ModelCache",
    "ValueEncoder",
    "create_encoder",
    "encoder_inputs",
    "list_encoders",
    "make_encoder_config",
]
