"""open_clip image and text towers.

Weights come from a pretrained tag (``pretrained = "laion2b_s34b_b79k"``), a Hugging Face hub
id (``model = "hf-hub:ORG/REPO"``), or a local checkpoint file (``pretrained = "path/to.pt"``,
optional ``sha256``). A local file needs ``preprocess_from``: the tag whose preprocessing the
weights were trained with (open_clip otherwise silently falls back to its defaults,
mlfoundations/open_clip#1068), or ``"model-default"`` to take open_clip's defaults knowingly.
``pretrained = ""`` is random initialisation and must be asked for with ``allow_random = true``.
With ``HF_HUB_OFFLINE=1`` a tag or hub id that is not in the local cache fails at once with a
message saying how to supply the weights offline.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mixbench.config import option
from mixbench.errors import ConfigError

from ..images import Preprocess
from .base import (
    AdaptiveBatch,
    ImageEncoder,
    ImageOptions,
    ValueEncoder,
    autocast,
    check_weights_file,
    looks_like_file,
    resolve_path,
    resolve_precision,
    seeded_init,
)

log = logging.getLogger(__name__)

MODEL_DEFAULT = "model-default"
_SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclasses.dataclass(frozen=True)
class OpenClipConfig(ImageOptions):
    """``[embed.encoders.<modality>] encoder = "open_clip"``: one tower of an open_clip model
    (the image tower for ``path``/``pixels`` columns, the text tower for ``text``)."""

    name: ClassVar[str] = "open_clip"
    inputs: ClassVar[tuple[str, ...]] = ("image", "text")

    encoder: str = option("open_clip", "encoder name")
    model: str = option("ViT-B-32", "open_clip architecture (see open_clip.list_models()) or hf-hub:ORG/REPO")
    pretrained: str = option("", "pretrained tag (e.g. laion2b_s34b_b79k), a local checkpoint file, "
                                 "or '' for random init (needs allow_random = true)")
    sha256: str = option("", "expected sha256 of a local checkpoint file (checked before anything is written)")
    preprocess_from: str = option("", "for a local checkpoint: the pretrained tag whose preprocessing it uses, "
                                      "or 'model-default'")
    model_config: str = option("", "an open_clip architecture JSON file to register (its file stem is the model name)")
    allow_random: bool = option(False, "allow random initialisation (pretrained = '')")
    cache_dir: str = option("", "download cache for tags and hub ids (default: open_clip's)")

    def validate(self) -> None:
        super().validate()
        hub = self.model.startswith("hf-hub:")
        if hub and self.pretrained:
            raise ConfigError(f"[{self.section}] pretrained = {self.pretrained!r}: a 'hf-hub:' model brings its own "
                              "weights; leave pretrained empty.")
        if not hub and not self.pretrained and not self.allow_random:
            raise ConfigError(
                f"[{self.section}] pretrained is empty, which means random initialisation. Name the weights "
                "(a pretrained tag or a local file), or ask for random weights with allow_random = true."
            )
        if self.sha256 and not _SHA_RE.match(self.sha256):
            raise ConfigError(f"[{self.section}] sha256 = {self.sha256!r}: must be 64 hexadecimal digits.")
        if self.model.startswith("local-dir:"):
            raise ConfigError(f"[{self.section}] model = {self.model!r}: 'local-dir:' is not supported; use "
                              "model = <architecture>, pretrained = <checkpoint file>, preprocess_from = <tag>.")


class ModelCache:
    """Shares one loaded model between the image and the text tower of a run."""

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}

    def get(self, key: Any, build: Any) -> Any:
        if key not in self._items:
            self._items[key] = build()
        return self._items[key]


@dataclasses.dataclass
class LoadedClip:
    model: Any
    model_name: str
    preprocess: Preprocess
    weights: dict[str, Any]
    preprocess_from: str


def _register_config(cfg: OpenClipConfig, base_dir: Path, where: str) -> None:
    import open_clip

    if not cfg.model_config:
        return
    path = resolve_path(cfg.model_config, base_dir)
    if not path.is_file():
        raise ConfigError(f"{where} model_config = {cfg.model_config!r}: file {path} does not exist.")
    if path.stem != cfg.model:
        raise ConfigError(f"{where} model = {cfg.model!r}: a model_config file registers the model named after "
                          f"its stem, {path.stem!r}; set model = {path.stem!r}.")
    if cfg.model not in open_clip.list_models():
        open_clip.add_model_config(path)
    if cfg.model not in open_clip.list_models():
        raise ConfigError(f"{where} model_config {path}: not an open_clip model config "
                          "(needs embed_dim, vision_cfg and text_cfg).")


def _check_model_name(model: str, where: str) -> None:
    import open_clip

    if model.startswith("hf-hub:"):
        return
    names = open_clip.list_models()
    if model.replace("/", "-") in names:
        return
    close = difflib.get_close_matches(model, names, n=6, cutoff=0.5)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"{where} model = {model!r}: not an open_clip architecture.{hint} All names: open_clip.list_models() "
        f"({len(names)} models); a custom architecture can be added with model_config = <file.json>."
    )


def _preprocess_overlay(model: str, tag: str, where: str) -> dict[str, Any]:
    import open_clip

    if tag == MODEL_DEFAULT:
        return {}
    pcfg = open_clip.get_pretrained_cfg(model, tag)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ConfigError(
            f"{where} preprocess_from = {tag!r}: not a pretrained tag of {model} "
            f"(tags: {', '.join(tags) or 'none'}); or use {MODEL_DEFAULT!r} for open_clip's default preprocessing."
        )
    return {k: v for k, v in pcfg.items() if k in ("mean", "std", "interpolation", "resize_mode", "fill_color")}


def _offline_hint() -> str:
    import os

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    state = "HF_HUB_OFFLINE=1 is set, so the hub is not contacted" if offline else "is the network reachable?"
    return (f" ({state}.) To run offline, download the weights on a connected machine (they are then cached), "
            "or give a local file: pretrained = <file>, sha256 = <hash>, preprocess_from = <tag>.")


def load_open_clip(cfg: OpenClipConfig, device: torch.device, base_dir: Path, where: str) -> LoadedClip:
    """Build the model, load its weights, and read back the preprocessing attached to them."""
    import open_clip
    from open_clip.pretrained import download_pretrained, download_pretrained_from_hf

    _register_config(cfg, base_dir, where)
    _check_model_name(cfg.model, where)
    name = cfg.model
    cache_dir = str(resolve_path(cfg.cache_dir, base_dir)) if cfg.cache_dir else None
    weights: dict[str, Any]
    force_pre: dict[str, Any] | None = None
    pretrained: str | None
    preprocess_from = ""
    if name.startswith("hf-hub:"):
        weights = {"source": "hf-hub", "hub_id": name[len("hf-hub:"):]}
        pretrained = None
        preprocess_from = name
    elif not cfg.pretrained:
        log.warning("%s: open_clip %s with RANDOM weights (pretrained = '', allow_random = true, seed = %d); "
                    "the features carry no learned meaning", where, name, cfg.seed)
        weights = {"source": "random", "seed": cfg.seed}
        pretrained = None
        preprocess_from = MODEL_DEFAULT
    elif open_clip.is_pretrained_cfg(name.replace("/", "-"), cfg.pretrained):
        weights = {"source": "tag", "tag": cfg.pretrained}
        pretrained = cfg.pretrained
        preprocess_from = cfg.pretrained  # sha256, when given, is checked against the cached file below
    elif looks_like_file(cfg.pretrained) or resolve_path(cfg.pretrained, base_dir).exists():
        path = resolve_path(cfg.pretrained, base_dir)
        if not cfg.preprocess_from:
            tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))
            raise ConfigError(
                f"{where} pretrained = {cfg.pretrained!r} is a local file: say which weights it holds with "
                f"preprocess_from = <tag> (tags of {name}: {', '.join(tags) or 'none'}) so the matching "
                f"preprocessing is used, or preprocess_from = {MODEL_DEFAULT!r} to use open_clip's defaults."
            )
        sha = check_weights_file(path, cfg.sha256, f"{where} pretrained")
        force_pre = _preprocess_overlay(name.replace("/", "-"), cfg.preprocess_from, where)
        weights = {"source": "file", "path": str(path), "sha256": sha}
        pretrained = str(path)
        preprocess_from = cfg.preprocess_from
    else:
        tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))
        raise ConfigError(
            f"{where} pretrained = {cfg.pretrained!r}: neither a pretrained tag of {name} "
            f"(tags: {', '.join(tags) or 'none'}) nor an existing file."
        )
    if cfg.preprocess_from and weights["source"] != "file":
        raise ConfigError(f"{where} preprocess_from is only for a local checkpoint file; tags and hub ids bring "
                          "their own preprocessing. Remove it.")
    try:
        with seeded_init(cfg.seed):  # built on the CPU: the same random init on every device and rank
            model = open_clip.create_model(
                name, pretrained=pretrained, precision="fp32", device="cpu", cache_dir=cache_dir,
                force_preprocess_cfg=force_pre,
            )
        model = model.to(device)
    except ConfigError:
        raise
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        what = {"hf-hub": f"hub model {name}", "tag": f"pretrained tag {cfg.pretrained!r} of {name}",
                "file": f"checkpoint {pretrained}", "random": f"architecture {name}"}[weights["source"]]
        hint = _offline_hint() if weights["source"] in ("hf-hub", "tag") else ""
        raise ConfigError(f"{where}: could not load the {what}: {exc}.{hint}") from None
    model.eval()
    if weights["source"] == "tag":
        try:
            fpath = download_pretrained(open_clip.get_pretrained_cfg(name.replace("/", "-"), cfg.pretrained),
                                        cache_dir=cache_dir)
            weights["path"] = str(fpath)
            weights["sha256"] = check_weights_file(Path(fpath), cfg.sha256, f"{where} pretrained")
        except ConfigError:
            raise
        except Exception as exc:  # the model loaded, so the file is cached; record what we can
            log.debug("could not locate the cached weights of %s: %s", cfg.pretrained, exc)
    elif weights["source"] == "hf-hub":
        try:
            fpath = download_pretrained_from_hf(weights["hub_id"], cache_dir=cache_dir)
            weights["path"] = str(fpath)
            weights["sha256"] = check_weights_file(Path(fpath), cfg.sha256, f"{where} model")
        except ConfigError:
            raise
        except Exception as exc:
            log.debug("could not locate the cached weights of %s: %s", name, exc)
    pre = Preprocess.from_open_clip(dict(open_clip.get_model_preprocess_cfg(model)))
    return LoadedClip(model=model, model_name=name, preprocess=pre, weights=weights, preprocess_from=preprocess_from)


def _loaded(cfg: OpenClipConfig, device: torch.device, base_dir: Path, cache: ModelCache | None, where: str) -> LoadedClip:
    key = ("open_clip", cfg.model, cfg.pretrained, cfg.sha256, cfg.preprocess_from, cfg.model_config,
           cfg.cache_dir, cfg.seed, str(device), str(base_dir))
    build = lambda: load_open_clip(cfg, device, base_dir, where)  # noqa: E731
    return cache.get(key, build) if cache is not None else build()


def _describe(cfg: OpenClipConfig, loaded: LoadedClip, tower: str, precision: str, dim: int,
              tokenizer: str = "") -> dict[str, Any]:
    import open_clip

    return {
        "encoder": "open_clip",
        "tower": tower,
        "model": loaded.model_name,
        "weights": dict(loaded.weights),
        "preprocess": {**loaded.preprocess.to_dict(), "preprocess_from": loaded.preprocess_from} if tower == "image"
        else {"tokenizer": tokenizer, "preprocess_from": loaded.preprocess_from},
        "precision": precision,
        "normalize": cfg.normalize,
        "dim": dim,
        "open_clip_version": open_clip.__version__,
        "config": cfg.to_dict(),
    }


class OpenClipImageEncoder(ImageEncoder):
    """The image tower: ``encode_image`` on the preprocessed batch."""

    def __init__(self, cfg: OpenClipConfig, device: torch.device, *, base_dir: Path = Path("."),
                 cache: ModelCache | None = None, where: str = "[embed.encoders]") -> None:
        super().__init__(cfg, device)
        self.clip = _loaded(cfg, device, base_dir, cache, where)
        self.preprocess = self.clip.preprocess
        with torch.inference_mode():
            h, w = self.preprocess.size
            self._dim = int(self.clip.model.encode_image(torch.zeros(1, 3, h, w, device=device)).shape[-1])

    @property
    def dim(self) -> int:
        return self._dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.model.encode_image(x)

    def describe(self) -> dict[str, Any]:
        return _describe(self.options, self.clip, "image", self.precision, self.dim)  # type: ignore[arg-type]


class OpenClipTextEncoder(ValueEncoder):
    """The text tower: open_clip's tokenizer, then ``encode_text``."""

    input_kind = "text"

    def __init__(self, cfg: OpenClipConfig, device: torch.device, *, base_dir: Path = Path("."),
                 cache: ModelCache | None = None, where: str = "[embed.encoders]") -> None:
        import open_clip

        super().__init__(cfg, device)
        self.options = cfg
        self.clip = _loaded(cfg, device, base_dir, cache, where)
        self.precision = resolve_precision(cfg.precision, device)
        try:
            self.tokenizer = open_clip.get_tokenizer(self.clip.model_name)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ConfigError(f"{where}: could not load the tokenizer of {self.clip.model_name}: {exc}.{_offline_hint()}") from None
        self.batcher = AdaptiveBatch(cfg.batch_size, "open_clip text forward")
        self._dim = int(self.encode(["a"]).shape[1])

    @property
    def dim(self) -> int:
        return self._dim

    @torch.inference_mode()
    def encode(self, values: list[str] | np.ndarray) -> np.ndarray:
        texts = [str(v) for v in values]
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return self.encode_tensor(texts).cpu().numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def encode_tensor(self, texts: list[str]) -> torch.Tensor:
        """(N, D) float32 features of ``texts``, left on the device (embed.textspace sums them there)."""
        tokens = self.tokenizer(texts)

        def run(a: int, b: int) -> torch.Tensor:
            t = tokens[a:b].to(self.device, non_blocking=True)
            with autocast(self.device, self.precision):
                f = self.clip.model.encode_text(t)
            f = f.float()
            return torch.nn.functional.normalize(f, dim=-1) if self.options.normalize else f

        parts = self.batcher.run(run, len(texts))
        return torch.cat(parts)

    def describe(self) -> dict[str, Any]:
        return _describe(self.options, self.clip, "text", self.precision, self.dim, type(self.tokenizer).__name__)
