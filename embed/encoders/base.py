"""What every encoder shares: its config base, the encoder interfaces, precision/autocast,
out-of-memory batch halving, and weight-file checks (path + sha256)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mixbench.config import Config, option
from mixbench.errors import ConfigError

from ..images import DEFAULT_MAX_PIXELS, Preprocess

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INPUT_KINDS = ("image", "text", "feat")


@dataclasses.dataclass(frozen=True)
class EncoderConfig(Config):
    """Base of the encoder configs: ``encoder`` names the registry entry."""

    name: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    section: ClassVar[str] = "embed.encoders"

    encoder: str = option("", "encoder name (see `mixbench list encoders`)")

    def validate(self) -> None:
        if self.name and self.encoder != self.name:
            raise ConfigError(f"[{self.section}] encoder = {self.encoder!r}: this table is for {self.name!r}.")


@dataclasses.dataclass(frozen=True)
class ImageOptions(EncoderConfig):
    """Settings shared by the image encoders (for open_clip they apply to the image tower)."""

    batch_size: int = option(256, "images per forward pass (halved automatically on CUDA out-of-memory)", low=1)
    workers: int = option(4, "DataLoader worker processes that read (and on the CPU decode) images", low=0)
    decode: str = option("auto", "where JPEGs are decoded: auto (device on CUDA, else cpu), device, cpu",
                         choices=("auto", "device", "cpu"))
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "larger JPEGs are decoded at reduced scale, other formats rejected", low=1)
    exif_orientation: bool = option(False, "turn each image upright by its EXIF orientation tag before resizing (phone "
                                           "photos); off by default, as open_clip's own preprocessing")
    precision: str = option("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16, fp16", choices=PRECISIONS)
    normalize: bool = option(True, "L2-normalise the output features")
    seed: int = option(0, "seed of the random initialisation (allow_random = true); unused with real weights")


# -- precision -----------------------------------------------------------------------------------
def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` on CUDA (``fp16`` where bf16 is unsupported), ``fp32`` elsewhere.

    bf16 counts as supported only natively (compute capability 8.0+): torch's default
    ``is_bf16_supported()`` also says yes on older GPUs, where bf16 is merely emulated (slowly)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast for ``bf16``/``fp16``; a no-op for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def seeded_init(seed: int) -> Any:
    """Run model construction with the CPU RNG seeded by ``seed`` and restore the caller's RNG
    state afterwards: a randomly initialised encoder is the same in every process and every
    resumed run, and no global RNG state leaks out (open_clip/timm/torchvision initialise from
    the global generator and take no generator argument)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


# -- out-of-memory: halve and continue -----------------------------------------------------------
class AdaptiveBatch:
    """Runs ``fn(start, stop)`` over ``[0, n)`` in chunks of at most ``size`` rows. A CUDA
    out-of-memory error halves ``size`` (kept for the rest of the run), logs it, and retries the
    same rows; at size 1 the error is raised with a hint."""

    def __init__(self, size: int, what: str) -> None:
        self.size = int(size)
        self.what = what
        self.halvings = 0

    def run(self, fn: Callable[[int, int], Any], n: int) -> list[Any]:
        """``[fn(a0, b0), fn(a1, b1), ...]`` over consecutive chunks covering ``[0, n)``."""
        out: list[Any] = []
        i = 0
        while i < n:
            step = min(self.size, n - i)
            try:
                out.append(fn(i, i + step))
            except torch.OutOfMemoryError:
                if step <= 1:
                    raise
                self.size = max(1, step // 2)
                self.halvings += 1
                log.warning("%s: CUDA out of memory with a batch of %d; halving the batch size to %d and continuing",
                            self.what, step, self.size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            i += step
        return out


# -- weights -------------------------------------------------------------------------------------
def resolve_path(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def check_weights_file(path: Path, expected_sha256: str, where: str) -> str:
    """Check a local weights file exists and matches ``expected_sha256`` (when given); return
    its sha256. A mismatch is a :class:`ConfigError` raised before anything is written."""
    from mixbench.store.manifest import sha256_file

    if not path.is_file():
        raise ConfigError(f"{where}: weights file {path} does not exist; check the path (relative paths are "
                          "relative to the recipe's folder).")
    got = sha256_file(path)
    want = expected_sha256.strip().lower()
    if want and got != want:
        raise ConfigError(
            f"{where}: weights file {path} has sha256 {got}, but the recipe expects {want}. The file is not the "
            "one the recipe names (a different or damaged download); fetch the right file or fix `sha256`."
        )
    return got


def looks_like_file(value: str) -> bool:
    """A ``pretrained``/``weights`` value that names a file rather than a tag."""
    return "/" in value or "\\" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"))


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only``), unwrapping the usual
    ``state_dict``/``model`` keys and a DDP ``module.`` prefix."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path), device="cpu")
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ConfigError(f"{path}: not a state dict (found {type(sd).__name__}).")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


# -- encoders ------------------------------------------------------------------------------------
class Encoder(ABC):
    """An encoder turns one modality's raw column into ``feat`` rows.

    ``input_kind`` is what it reads: ``image`` (``path``/``pixels``), ``text`` (``text``) or
    ``feat`` (tag/BoW vectors or finished features)."""

    input_kind: str = ""

    def __init__(self, cfg: EncoderConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device

    @property
    @abstractmethod
    def dim(self) -> int:
        """Output feature dimension."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the manifest records: encoder, model, weights source + sha256, preprocessing, precision."""

    # Encoders fitted on the train split (TF-IDF vocabularies) override these three.
    needs_fit: bool = False

    def fit(self, values: Iterable[list[str] | np.ndarray]) -> None:  # pragma: no cover - default no-op
        """Fit on the train split, given as an iterable of per-shard value batches."""

    def fitted_state(self) -> Any:
        return None

    def load_fitted_state(self, state: Any) -> None:  # pragma: no cover - default no-op
        pass

    def aux_files(self) -> dict[str, bytes]:
        """Extra files to store next to the features (e.g. a fitted vocabulary)."""
        return {}


class ImageEncoder(Encoder):
    """An image encoder: the pipeline hands it resized ``uint8`` batches on its device."""

    input_kind = "image"
    preprocess: Preprocess

    def __init__(self, cfg: ImageOptions, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.options = cfg
        self.precision = resolve_precision(cfg.precision, device)
        self.batcher = AdaptiveBatch(cfg.batch_size, f"{type(self).__name__} forward")
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def device_decode(self) -> bool:
        if self.options.decode == "auto":
            return self.device.type == "cuda"
        return self.options.decode == "device"

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a normalised float batch (B,3,H,W), on the device."""

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8`` (B,3,H,W) on the device → float32 (B,D) features on the device."""

        if self._stats is None or self._stats[0].device != images.device:
            self._stats = self.preprocess.stats(images.device)

        def run(a: int, b: int) -> torch.Tensor:
            x = self.preprocess.normalize(images[a:b], self._stats)
            with autocast(self.device, self.precision):
                f = self.forward(x)
            f = f.float()
            return torch.nn.functional.normalize(f, dim=-1) if self.options.normalize else f

        parts = self.batcher.run(run, int(images.shape[0]))
        return torch.cat(parts) if parts else torch.empty((0, self.dim), device=self.device)


class ValueEncoder(Encoder):
    """An encoder of ``text`` strings or ``feat`` vectors, run in the main process."""

    @abstractmethod
    def encode(self, values: list[str] | np.ndarray) -> np.ndarray:
        """(N,) strings or (N,K) vectors → float32 (N,D)."""
