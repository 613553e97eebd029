"""CNN backbones from torchvision or timm: the globally pooled penultimate layer.

``model = "torchvision:resnet50"`` or ``"timm:resnet18"``. Weights:

* ``weights = ""`` with ``allow_random = true``: random initialisation (logged as a warning);
* a library name: torchvision weights (``DEFAULT``, ``IMAGENET1K_V2``, ...) or, for timm,
  ``pretrained`` (the default tag) or a tag such as ``a1_in1k``. These download on first use
  (torch hub cache / Hugging Face hub) and fail with a clear message offline;
* a local state-dict file (``.pth``/``.pt``/``.safetensors``, optional ``sha256``), loaded
  strictly into the full network before its classifier is removed.

Preprocessing comes from the weights (torchvision's ``ImageClassification`` preset or timm's
``pretrained_cfg``); for a local file name the weights it holds with ``preprocess_from``.
``image_size``/``resize_size``/``mean``/``std``/``interpolation`` override single values.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import torch

from mixbench.config import option
from mixbench.errors import ConfigError

from ..images import Preprocess
from .base import (
    ImageEncoder,
    ImageOptions,
    check_weights_file,
    load_state_dict_file,
    looks_like_file,
    resolve_path,
    seeded_init,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LIBRARIES = ("torchvision", "timm")


@dataclasses.dataclass(frozen=True)
class CnnConfig(ImageOptions):
    """``[embed.encoders.<modality>] encoder = "cnn"``."""

    name: ClassVar[str] = "cnn"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    encoder: str = option("cnn", "encoder name")
    normalize: bool = option(False, "L2-normalise the output features")
    model: str = option("torchvision:resnet50", "LIBRARY:ARCH with LIBRARY torchvision or timm")
    weights: str = option("", "'' (random, needs allow_random), a library weights name (torchvision: DEFAULT, "
                              "IMAGENET1K_V2, ...; timm: pretrained or a tag), or a local state-dict file")
    sha256: str = option("", "expected sha256 of a local weights file")
    preprocess_from: str = option("", "for a local file: the torchvision weights name or timm tag it holds")
    allow_random: bool = option(False, "allow random initialisation (weights = '')")
    image_size: int = option(0, "crop size; 0 = from the weights", low=0)
    resize_size: int = option(0, "shorter edge before the centre crop; 0 = from the weights", low=0)
    mean: list[float] = option([], "per-channel mean; empty = from the weights")
    std: list[float] = option([], "per-channel std; empty = from the weights")
    interpolation: str = option("", "'' = from the weights, bilinear or bicubic", choices=("", "bilinear", "bicubic"))

    def validate(self) -> None:
        super().validate()
        lib, _, arch = self.model.partition(":")
        if lib not in LIBRARIES or not arch:
            raise ConfigError(f"[{self.section}] model = {self.model!r}: must be LIBRARY:ARCH with LIBRARY one of "
                              f"{', '.join(LIBRARIES)}, e.g. 'torchvision:resnet50' or 'timm:resnet18'.")
        if not self.weights and not self.allow_random:
            raise ConfigError(f"[{self.section}] weights is empty, which means random initialisation. Name the "
                              "weights, or ask for random weights with allow_random = true.")
        for key in ("mean", "std"):
            v = getattr(self, key)
            if v and len(v) != 3:
                raise ConfigError(f"[{self.section}] {key} = {v}: must have 3 values (R, G, B) or be empty.")

    @property
    def library(self) -> str:
        return self.model.partition(":")[0]

    @property
    def arch(self) -> str:
        return self.model.partition(":")[2]


def _unknown(kind: str, name: str, names: list[str], where: str, key: str = "model") -> ConfigError:
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
    hint = f" Close names: {', '.join(close)}." if close else ""
    return ConfigError(f"{where} {key} = {name!r}: not a {kind}.{hint}")


def _strip_head(model: torch.nn.Module) -> None:
    """Replace the last ``nn.Linear`` (the classifier) with ``Identity``: the output becomes the
    pooled penultimate features (resnet ``fc``, efficientnet/mobilenet/convnext ``classifier``...)."""
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            last = name
    if last is None:
        raise ConfigError(f"{type(model).__name__}: no final linear classifier found to remove.")
    parent = model
    *path, leaf = last.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, leaf, torch.nn.Identity())


class CnnEncoder(ImageEncoder):
    """A torchvision or timm backbone without its classifier."""

    def __init__(self, cfg: CnnConfig, device: torch.device, *, base_dir: Path = Path("."),
                 where: str = "[embed.encoders]", **_: Any) -> None:
        super().__init__(cfg, device)
        self.cnn = cfg
        with seeded_init(cfg.seed):  # the same random init (where asked) in every process
            if cfg.library == "torchvision":
                net, pre, weights, source = self._torchvision(cfg, base_dir, where)
            else:
                net, pre, weights, source = self._timm(cfg, base_dir, where)
        self.net = net.to(device).eval()
        self.weights = weights
        self.preprocess = _override(pre, cfg)
        self.preprocess_from = source
        with torch.inference_mode():
            h, w = self.preprocess.size
            self._dim = int(self.net(torch.zeros(1, 3, h, w, device=device)).flatten(1).shape[1])

    # -- torchvision ------------------------------------------------------------------------------
    def _torchvision(self, cfg: CnnConfig, base_dir: Path, where: str) -> tuple[torch.nn.Module, Preprocess, dict, str]:
        import torchvision.models as tvm

        names = tvm.list_models()
        if cfg.arch not in names:
            raise _unknown("torchvision model (torchvision.models.list_models())", cfg.arch, names, where)
        try:
            enum = tvm.get_model_weights(cfg.arch)
        except (ValueError, KeyError):
            enum = None
        members = list(enum.__members__) if enum is not None else []

        def weights_enum(tag: str, key: str) -> Any:
            if enum is None or tag not in members:
                raise ConfigError(f"{where} {key} = {tag!r}: torchvision {cfg.arch} has weights "
                                  f"{', '.join(members) or 'none'}.")
            return enum[tag]

        if not cfg.weights:
            log.warning("%s: %s with RANDOM weights (allow_random = true)", where, cfg.model)
            net = tvm.get_model(cfg.arch, weights=None)
            src = cfg.preprocess_from or ("DEFAULT" if members else "")
            pre = _tv_preprocess(weights_enum(src, "preprocess_from")) if src else _imagenet_default()
            weights: dict[str, Any] = {"source": "random", "seed": cfg.seed}
        elif looks_like_file(cfg.weights) or resolve_path(cfg.weights, base_dir).exists():
            path = resolve_path(cfg.weights, base_dir)
            sha = check_weights_file(path, cfg.sha256, f"{where} weights")
            net = tvm.get_model(cfg.arch, weights=None)
            _load_strict(net, path, where)
            src = cfg.preprocess_from or ("DEFAULT" if members else "")
            if not cfg.preprocess_from:
                log.warning("%s: local weights without preprocess_from; using the preprocessing of torchvision's "
                            "%s weights for %s", where, src or "ImageNet defaults", cfg.arch)
            pre = _tv_preprocess(weights_enum(src, "preprocess_from")) if src else _imagenet_default()
            weights = {"source": "file", "path": str(path), "sha256": sha}
        else:
            w = weights_enum(cfg.weights, "weights")
            try:
                net = tvm.get_model(cfg.arch, weights=w)
            except (OSError, RuntimeError, ValueError) as exc:
                raise ConfigError(
                    f"{where} weights = {cfg.weights!r}: could not download torchvision's {w} ({exc}). Offline, "
                    f"put the file from {w.url} into the torch hub cache ({_hub_dir()}/checkpoints) or give it as "
                    "weights = <file> with sha256 and preprocess_from."
                ) from None
            pre = _tv_preprocess(w)
            src = str(w).split(".")[-1]
            weights = {"source": "library", "name": str(w), "url": w.url}
            cached = Path(_hub_dir()) / "checkpoints" / Path(w.url).name
            if cached.is_file():
                weights["sha256"] = check_weights_file(cached, cfg.sha256, f"{where} weights")
        _strip_head(net)
        return net, pre, weights, src

    # -- timm -------------------------------------------------------------------------------------
    def _timm(self, cfg: CnnConfig, base_dir: Path, where: str) -> tuple[torch.nn.Module, Preprocess, dict, str]:
        import timm
        from timm.data import resolve_data_config

        arch = cfg.arch
        if not timm.is_model(arch):
            raise _unknown("timm model (timm.list_models())", arch, timm.list_models(), where)
        if not cfg.weights:
            log.warning("%s: %s with RANDOM weights (allow_random = true)", where, cfg.model)
            net = timm.create_model(arch, pretrained=False)
            weights: dict[str, Any] = {"source": "random", "seed": cfg.seed}
            src = cfg.preprocess_from
        elif looks_like_file(cfg.weights) or resolve_path(cfg.weights, base_dir).exists():
            path = resolve_path(cfg.weights, base_dir)
            sha = check_weights_file(path, cfg.sha256, f"{where} weights")
            net = timm.create_model(arch, pretrained=False)
            _load_strict(net, path, where)
            weights = {"source": "file", "path": str(path), "sha256": sha}
            src = cfg.preprocess_from
            if not src:
                log.warning("%s: local weights without preprocess_from; using timm's default pretrained_cfg of %s",
                            where, arch)
        else:
            name = arch if cfg.weights == "pretrained" else f"{arch.split('.')[0]}.{cfg.weights}"
            try:
                net = timm.create_model(name, pretrained=True)
            except (RuntimeError, OSError, ValueError) as exc:
                raise ConfigError(
                    f"{where} weights = {cfg.weights!r}: could not load timm's pretrained {name} ({exc}). Offline "
                    "(HF_HUB_OFFLINE=1) only cached weights load; download them on a connected machine or give a "
                    "local file: weights = <file>, sha256 = <hash>, preprocess_from = <tag>."
                ) from None
            weights = {"source": "library", "name": name}
            src = name
        if src:
            pcfg = _timm_pretrained_cfg(arch, src, where)
            data_cfg = resolve_data_config(pretrained_cfg=pcfg)
        else:
            data_cfg = resolve_data_config({}, model=net)
        net.reset_classifier(0)
        return net, _timm_preprocess(data_cfg), weights, src or f"{arch} default pretrained_cfg"

    @property
    def dim(self) -> int:
        return self._dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)

    def describe(self) -> dict[str, Any]:
        import timm
        import torchvision

        return {
            "encoder": "cnn",
            "model": self.cnn.model,
            "weights": dict(self.weights),
            "preprocess": {**self.preprocess.to_dict(), "preprocess_from": self.preprocess_from},
            "precision": self.precision,
            "normalize": self.cnn.normalize,
            "dim": self.dim,
            "library_version": torchvision.__version__ if self.cnn.library == "torchvision" else timm.__version__,
            "config": self.cnn.to_dict(),
        }


def _hub_dir() -> str:
    return torch.hub.get_dir()


def _load_strict(net: torch.nn.Module, path: Path, where: str) -> None:
    sd = load_state_dict_file(path)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()
        raise ConfigError(f"{where} weights {path}: does not fit the architecture ({' '.join(msg[:3])[:400]}); "
                          "check that model names the architecture the file was saved from.") from None


def _imagenet_default() -> Preprocess:
    return Preprocess(size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear",
                      resize_mode="shortest", resize_size=256)


def _tv_preprocess(weights: Any) -> Preprocess:
    t = weights.transforms()
    crop = int(t.crop_size[0])
    resize = int(t.resize_size[0])
    interp = "bicubic" if "BICUBIC" in str(t.interpolation) else "bilinear"
    return Preprocess(size=(crop, crop), mean=tuple(t.mean), std=tuple(t.std), interpolation=interp,  # type: ignore[arg-type]
                      resize_mode="shortest", resize_size=resize)


def _timm_pretrained_cfg(arch: str, tag: str, where: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    name = tag if "." in tag else f"{arch.split('.')[0]}.{tag}"
    pcfg = get_pretrained_cfg(name)
    if pcfg is None:
        raise ConfigError(f"{where} preprocess_from = {tag!r}: timm has no pretrained config {name!r}.")
    return pcfg.to_dict()


def _timm_preprocess(data_cfg: dict[str, Any]) -> Preprocess:
    _, h, w = data_cfg["input_size"]
    crop_pct = float(data_cfg.get("crop_pct") or 1.0)
    mode = data_cfg.get("crop_mode", "center")
    if mode not in ("center", None):
        log.warning("timm crop_mode %r is approximated by a centre crop", mode)
    interp = "bicubic" if data_cfg.get("interpolation") == "bicubic" else "bilinear"
    resize = int(math.floor(min(h, w) / crop_pct))
    return Preprocess(size=(int(h), int(w)), mean=tuple(data_cfg["mean"]), std=tuple(data_cfg["std"]),  # type: ignore[arg-type]
                      interpolation=interp, resize_mode="shortest", resize_size=resize)


def _override(pre: Preprocess, cfg: CnnConfig) -> Preprocess:
    changes: dict[str, Any] = {}
    if cfg.image_size:
        changes["size"] = (cfg.image_size, cfg.image_size)
        if not cfg.resize_size and pre.resize_size:
            changes["resize_size"] = int(round(cfg.image_size * pre.resize_size / pre.size[0]))
    if cfg.resize_size:
        changes["resize_size"] = cfg.resize_size
    if cfg.mean:
        changes["mean"] = tuple(cfg.mean)
    if cfg.std:
        changes["std"] = tuple(cfg.std)
    if cfg.interpolation:
        changes["interpolation"] = cfg.interpolation
    return dataclasses.replace(pre, **changes) if changes else pre
