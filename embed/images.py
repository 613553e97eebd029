"""Images: read bytes, decode (on the device for JPEG on CUDA, with PIL on the CPU otherwise),
then resize, crop and normalise with the preprocessing that belongs to the encoder's weights.

The split of work follows where it is cheapest:

* DataLoader workers (CPU processes) read the bytes of a batch (image files or the ``pixels``
  column of a raw shard) and check each one: missing, zero-byte, truncated and undecodable
  files become *rejects* with a reason; nothing in a batch can fail the whole batch.
* With ``device_decode`` (CUDA), plain baseline RGB/grayscale JPEGs travel as bytes and are
  decoded in one batched ``torchvision.io.decode_jpeg(list, device=...)`` call; every other
  image (PNG, WebP, CMYK or progressive JPEG, ...) is decoded by PIL in the worker and resized
  on the device. Without it (the CPU path) the worker decodes *and* resizes, so that work runs
  in parallel processes, and hands over a ready ``uint8`` batch.
* Resizing uses the same torch code in both places (antialiased bicubic/bilinear on ``uint8``
  tensors, within one grey level of PIL's resize that open_clip's own transform uses);
  normalisation (mean/std) happens on the device in float.

Grayscale, palette, CMYK and alpha images are converted to RGB (PIL ``convert("RGB")``, as
open_clip's transform does; alpha is dropped, not composited). EXIF orientation is applied only
with ``exif_orientation = true`` (PIL ``ImageOps.exif_transpose``; a JPEG with an orientation tag
then goes to PIL, not to the device decoder); by default it is not, as in open_clip's and
torchvision's own preprocessing. Huge images are bounded: a JPEG above ``max_pixels`` is decoded
at a reduced DCT scale (PIL ``draft``), other formats above it are rejected, and anything PIL
refuses as a decompression bomb is rejected.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

# Reject reasons (the keys of ``info["rejects"]["by_reason"]``).
MISSING = "missing-file"
EMPTY = "empty-file"
UNREADABLE = "unreadable-file"
TRUNCATED = "truncated-image"
UNDECODABLE = "undecodable-image"
TOO_LARGE = "too-large-image"
ABSENT = "absent"  # a zero-filled placeholder row (``present == 0``): not decoded, not a reject

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
EXIF_ORIENTATION = 0x0112  # the EXIF "Orientation" tag (1 = upright)
INTERPOLATIONS = ("bicubic", "bilinear")
RESIZE_MODES = ("shortest", "longest", "squash")

_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"


class ImageReject(Exception):
    """An image that cannot be used; ``reason`` is one of the reject reasons above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# -- preprocessing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocess:
    """Resize/crop/normalise settings of an encoder's weights (recorded in the manifest).

    ``resize_mode``: ``shortest`` (resize the shorter edge to ``resize_size`` or the crop size,
    then centre-crop), ``longest`` (fit the longer edge, then pad with ``fill_color``),
    ``squash`` (resize to ``size`` ignoring the aspect ratio). Same semantics as open_clip's
    ``image_transform`` and torchvision's ``ImageClassification`` preset.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    resize_size: int | None = None
    fill_color: int = 0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r}: must be one of {INTERPOLATIONS}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r}: must be one of {RESIZE_MODES}")

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> Preprocess:
        """From open_clip's ``PreprocessCfg`` dict (``get_model_preprocess_cfg(model)``)."""
        size = cfg.get("size", 224)
        size2 = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[-1]))
        interp = cfg.get("interpolation", "bicubic")
        return cls(
            size=size2,
            mean=_three(cfg.get("mean")),
            std=_three(cfg.get("std")),
            interpolation="bilinear" if interp == "bilinear" else "bicubic",
            resize_mode=cfg.get("resize_mode", "shortest"),
            fill_color=int(cfg.get("fill_color", 0) or 0),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "resize_size": self.resize_size,
            "fill_color": self.fill_color,
            "antialias": True,
        }

    # The torch resize path: works on (3,H,W) or (B,3,H,W) uint8 tensors of one size, any device.
    def resize(self, img: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.v2.functional as F
        from torchvision.transforms import InterpolationMode

        mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
        th, tw = self.size
        h, w = int(img.shape[-2]), int(img.shape[-1])
        if self.resize_mode == "squash":
            return F.resize(img, [th, tw], interpolation=mode, antialias=True)
        if self.resize_mode == "shortest" and (self.resize_size is not None or th == tw):
            # torchvision's Resize(int): shorter edge to s, longer edge int(s * long / short).
            out = F.resize(img, [self.resize_size or th], interpolation=mode, antialias=True)
            return _center_crop_or_pad(out, (th, tw), 0)
        longest = 1.0 if self.resize_mode == "longest" else 0.0
        rh, rw = h / th, w / tw
        ratio = max(rh, rw) * longest + min(rh, rw) * (1.0 - longest)
        new = [max(1, round(h / ratio)), max(1, round(w / ratio))]
        out = F.resize(img, new, interpolation=mode, antialias=True)
        return _center_crop_or_pad(out, (th, tw), self.fill_color if self.resize_mode == "longest" else 0)

    def stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` as (1,3,1,1) float32 tensors on ``device`` (make once, reuse per batch:
        building them per batch would be a synchronising host-to-device copy on CUDA)."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return mean.to(device), std.to(device)

    def normalize(self, batch: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``uint8`` (B,3,H,W) → float32 normalised, on the batch's device."""
        mean, std = stats if stats is not None else self.stats(batch.device)
        return batch.float().div_(255.0).sub_(mean).div_(std)


def _three(v: Any) -> tuple[float, float, float]:
    if v is None:
        raise ValueError("mean/std missing from the preprocessing config")
    if isinstance(v, (int, float)):
        return (float(v),) * 3  # type: ignore[return-value]
    vals = tuple(float(x) for x in v)
    if len(vals) != 3:
        raise ValueError(f"mean/std must have 3 values, got {vals}")
    return vals  # type: ignore[return-value]


def _center_crop_or_pad(img: torch.Tensor, size: tuple[int, int], fill: int) -> torch.Tensor:
    """open_clip's ``center_crop_or_pad`` on tensors of shape (..., H, W)."""
    import torch.nn.functional as tnf

    ch, cw = size
    h, w = int(img.shape[-2]), int(img.shape[-1])
    if cw > w or ch > h:
        pad = [
            (cw - w) // 2 if cw > w else 0,
            (cw - w + 1) // 2 if cw > w else 0,
            (ch - h) // 2 if ch > h else 0,
            (ch - h + 1) // 2 if ch > h else 0,
        ]
        img = tnf.pad(img, pad, value=fill)
        h, w = int(img.shape[-2]), int(img.shape[-1])
        if (h, w) == (ch, cw):
            return img
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return img[..., top : top + ch, left : left + cw]


def resize_many(images: Sequence[torch.Tensor], pre: Preprocess) -> torch.Tensor:
    """Resize a list of (3,H,W) uint8 tensors (sizes may differ) into one (B,3,h,w) batch.

    Images of the same size are resized together (one kernel launch per size group)."""
    if not images:
        raise ValueError("resize_many: no images")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault((int(img.shape[-2]), int(img.shape[-1])), []).append(i)
    device = images[0].device
    if len(groups) == 1:
        return pre.resize(torch.stack(list(images)))
    out = torch.empty((len(images), 3, *pre.size), dtype=torch.uint8, device=device)
    for idx in groups.values():
        batch = torch.stack([images[i] for i in idx]) if len(idx) > 1 else images[idx[0]].unsqueeze(0)
        out[index_tensor(idx, device)] = pre.resize(batch)
    return out


def index_tensor(rows: Sequence[int], device: torch.device) -> torch.Tensor:
    """An int64 index on ``device``. On CUDA it is copied from pinned memory without blocking:
    a plain copy from a Python list would wait for all queued GPU work (a pipeline stall)."""
    t = torch.tensor(list(rows), dtype=torch.long)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


# -- bytes and formats ---------------------------------------------------------------------------
def sniff_format(data: bytes) -> str:
    """The image format from magic bytes (the file name is not trusted)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "unknown"


def jpeg_complete(data: bytes) -> bool:
    """True when a JPEG's main image has an end-of-image marker after its scan data.

    Marker segments are walked from the start (so an EXIF thumbnail's own EOI does not count)
    to the first start-of-scan; an EOI must follow it. A JPEG cut short fails this check on the
    CPU and the device paths alike (nvJPEG would otherwise decode a grey-filled image)."""
    pos, n = 2, len(data)
    sos = -1
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        seg = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            sos = pos + 2 + seg
            break
        pos += 2 + seg
    if sos < 0:
        return False
    return data.rfind(b"\xff\xd9") >= sos


def read_file(path: Path) -> bytes:
    """Read an image file; failures are :class:`ImageReject` with a reason."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageReject(MISSING, str(path)) from None
    except IsADirectoryError:
        raise ImageReject(UNREADABLE, f"{path} is a directory") from None
    except OSError as exc:
        raise ImageReject(UNREADABLE, f"{path}: {exc}") from None
    if not data:
        raise ImageReject(EMPTY, str(path))
    return data


def device_decodable(data: bytes, max_pixels: int, exif_orientation: bool = False) -> bool:
    """Whether ``decode_jpeg(..., device=cuda)`` should take these bytes: a complete baseline
    JPEG in RGB (YCbCr) or grayscale no larger than ``max_pixels`` (and, with ``exif_orientation``,
    without an EXIF orientation other than 1). Everything else goes to PIL."""
    if sniff_format(data) != "jpeg" or not jpeg_complete(data):
        return False
    try:
        with _quiet_pil():
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            ok = img.format == "JPEG" and img.mode in ("RGB", "L") and not img.info.get("progressive") \
                and not img.info.get("progression")
            if ok and exif_orientation:
                ok = img.getexif().get(EXIF_ORIENTATION, 1) == 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    return bool(ok) and w * h <= max_pixels


class _quiet_pil(warnings.catch_warnings):
    """Silence PIL's decompression-bomb and palette-transparency warnings locally."""

    def __enter__(self) -> Any:
        out = super().__enter__()
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)
        return out


def decode_cpu(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, exif_orientation: bool = False) -> tuple[torch.Tensor, bool]:
    """Decode any image PIL reads into an RGB ``uint8`` (3,H,W) tensor, turned upright by its EXIF
    orientation tag when ``exif_orientation``.

    Returns ``(image, reduced)``; ``reduced`` is True when a JPEG above ``max_pixels`` was decoded
    at a smaller DCT scale (bounded memory). Raises :class:`ImageReject`."""
    fmt = sniff_format(data)
    if fmt == "jpeg" and not jpeg_complete(data):
        raise ImageReject(TRUNCATED, "JPEG without an end-of-image marker after its scan data")
    reduced = False
    with _quiet_pil():
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageReject(TOO_LARGE, str(exc)) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageReject(UNDECODABLE, f"{fmt}: {exc}") from None
        w, h = img.size
        if w * h > max_pixels:
            if img.format != "JPEG":
                raise ImageReject(TOO_LARGE, f"{w}x{h} {img.format} exceeds max_pixels={max_pixels}")
            scale = next((k for k in (2, 4, 8) if math.ceil(w / k) * math.ceil(h / k) <= max_pixels), None)
            if scale is None:
                raise ImageReject(TOO_LARGE, f"{w}x{h} JPEG exceeds max_pixels={max_pixels} even at 1/8 scale")
            img.draft("RGB", (math.ceil(w / scale), math.ceil(h / scale)))
            reduced = True
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            reason = TRUNCATED if "truncated" in str(exc).lower() else UNDECODABLE
            raise ImageReject(reason, f"{fmt}: {exc}") from None
        if img.size[0] * img.size[1] > max_pixels:
            raise ImageReject(TOO_LARGE, f"{img.size[0]}x{img.size[1]} exceeds max_pixels={max_pixels}")
        if exif_orientation:
            img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        arr = np.array(img, dtype=np.uint8, copy=True)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReject(UNDECODABLE, f"decoded to shape {arr.shape}")
    return torch.from_numpy(arr).permute(2, 0, 1), reduced


def decode_jpegs_on_device(datas: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Batched ``decode_jpeg`` on ``device`` (CUDA; the CPU works too and runs the same code).

    Returns one RGB uint8 (3,H,W) tensor per input, or ``None`` where the decoder failed (the
    caller retries that image with PIL, which gives the reject reason). A failing batch is
    retried image by image. A CUDA out-of-memory error propagates (the caller halves its batch).
    torchvision 0.29's DeprecationWarning for its decoders is silenced here, locally."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
        try:
            out = decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device)
            return list(out)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            _raise_if_out_of_memory(exc)
            log.debug("batched decode_jpeg failed (%s); decoding one by one", exc)
        single: list[torch.Tensor | None] = []
        for d in datas:
            try:
                single.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as exc:
                _raise_if_out_of_memory(exc)
                single.append(None)
        return single


def _raise_if_out_of_memory(exc: RuntimeError) -> None:
    """Re-raise a CUDA out-of-memory error that reaches us as a plain ``RuntimeError``.

    torchvision's ``decode_jpegs_cuda`` catches every C++ exception of a decode (the allocation
    of the output tensors included) and re-throws it as ``"Error while decoding JPEG images: ..."``,
    so an OOM inside ``decode_jpeg(..., device=cuda)`` loses its type; only the message says
    "CUDA out of memory". Without this it would pass for an undecodable image."""
    if "out of memory" in str(exc).lower():
        raise torch.OutOfMemoryError(str(exc)) from exc


# -- the worker side: one task = one batch of rows of one shard -----------------------------------
@dataclass(frozen=True)
class ImageSource:
    """Where one modality's images of one input shard are: the shard file and column."""

    shard: str  # absolute path of the input HDF5 shard
    modality: str
    column: str  # "path" or "pixels"
    has_present: bool
    image_root: str  # folder the ``path`` column is relative to ("" for pixels)


@dataclass(frozen=True)
class DecodePlan:
    """How a modality's images are decoded (picklable; sent to the workers)."""

    preprocess: Preprocess
    device_decode: bool
    max_pixels: int = DEFAULT_MAX_PIXELS
    exif_orientation: bool = False


@dataclass
class RawBatch:
    """What a worker hands over for one batch of rows ``[start, stop)`` of one source.

    ``status[i]`` is ``None`` (usable), :data:`ABSENT` or a reject reason. Usable rows come in
    one of three forms: ``ready`` (resized uint8 batch, CPU path), ``decoded`` (full-size
    uint8 images to resize on the device) or JPEG bytes to decode on the device, packed into one
    ``jpeg_blob`` (one shared-memory tensor per batch, not one per image) cut by ``jpeg_sizes``."""

    task: int
    start: int
    stop: int
    status: list[str | None]
    files: list[str]
    ready: torch.Tensor | None = None
    ready_rows: list[int] = field(default_factory=list)
    decoded: list[torch.Tensor] = field(default_factory=list)
    decoded_rows: list[int] = field(default_factory=list)
    jpeg_blob: torch.Tensor | None = None
    jpeg_sizes: list[int] = field(default_factory=list)
    jpeg_rows: list[int] = field(default_factory=list)
    reduced: int = 0

    def jpegs(self) -> list[torch.Tensor]:
        """The JPEG byte strings as 1-D uint8 CPU tensors (contiguous views of the blob)."""
        if self.jpeg_blob is None:
            return []
        return list(torch.split(self.jpeg_blob, self.jpeg_sizes))

    def pin_memory(self) -> RawBatch:
        """Called by the DataLoader's pin-memory thread (CUDA only)."""
        if self.ready is not None:
            self.ready = self.ready.pin_memory()
        self.decoded = [t.pin_memory() for t in self.decoded]
        return self


@dataclass(frozen=True)
class ImageTask:
    source: int  # index into ImageTaskDataset.sources
    start: int
    stop: int


class ImageTaskDataset(Dataset):
    """Map-style dataset whose items are whole batches (``DataLoader(batch_size=None)``).

    Each worker opens the input shards lazily (never an h5py handle shared across a fork) and
    reads the rows of one task with one slice read."""

    def __init__(self, sources: Sequence[ImageSource], plans: dict[str, DecodePlan], tasks: Sequence[ImageTask]) -> None:
        self.sources = list(sources)
        self.plans = dict(plans)
        self.tasks = list(tasks)
        self._h5: tuple[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None
        return state

    def _group(self, src: ImageSource) -> Any:
        import h5py

        if self._h5 is None or self._h5[0] != src.shard:
            self.close()
            self._h5 = (src.shard, h5py.File(src.shard, "r"))
        return self._h5[1][src.modality]

    def close(self) -> None:
        if self._h5 is not None:
            try:
                self._h5[1].close()
            finally:
                self._h5 = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __getitem__(self, k: int) -> RawBatch:
        task = self.tasks[k]
        src = self.sources[task.source]
        plan = self.plans[src.modality]
        g = self._group(src)
        a, b = task.start, task.stop
        present = np.asarray(g["present"][a:b]) if src.has_present else np.ones(b - a, dtype=np.uint8)
        n = b - a
        status: list[str | None] = [None] * n
        files: list[str] = [""] * n
        out = RawBatch(task=k, start=a, stop=b, status=status, files=files)
        ready: list[torch.Tensor] = []
        jpegs: list[bytes] = []
        if src.column == "pixels":
            pix = np.asarray(g["pixels"][a:b])
            for i in range(n):
                if not present[i]:
                    status[i] = ABSENT
                    continue
                img = torch.from_numpy(np.ascontiguousarray(pix[i])).permute(2, 0, 1)
                self._place(out, ready, i, img, plan)
        else:
            paths = [str(p) for p in g["path"].asstr()[a:b]]
            root = Path(src.image_root)
            for i, rel in enumerate(paths):
                files[i] = rel
                if not present[i]:
                    status[i] = ABSENT
                    continue
                try:
                    if not rel:
                        raise ImageReject(MISSING, "empty path")
                    data = read_file(root / rel if not os.path.isabs(rel) else Path(rel))
                    if plan.device_decode and device_decodable(data, plan.max_pixels, plan.exif_orientation):
                        jpegs.append(data)
                        out.jpeg_sizes.append(len(data))
                        out.jpeg_rows.append(i)
                        continue
                    img, reduced = decode_cpu(data, plan.max_pixels, plan.exif_orientation)
                    out.reduced += int(reduced)
                    self._place(out, ready, i, img, plan)
                except ImageReject as rej:
                    status[i] = rej.reason
                    log.debug("%s row %d (%s): %s", src.shard, a + i, rel, rej)
                except Exception as exc:  # one pathological file must not stop a long run
                    status[i] = UNDECODABLE
                    log.warning("%s row %d (%s): unexpected %s while decoding: %s; rejected",
                                src.shard, a + i, rel, type(exc).__name__, exc)
        if ready:
            out.ready = torch.stack(ready)
        if jpegs:
            out.jpeg_blob = torch.frombuffer(bytearray(b"".join(jpegs)), dtype=torch.uint8)
        return out

    @staticmethod
    def _place(out: RawBatch, ready: list[torch.Tensor], i: int, img: torch.Tensor, plan: DecodePlan) -> None:
        if plan.device_decode:
            out.decoded.append(img.contiguous())
            out.decoded_rows.append(i)
        else:
            ready.append(plan.preprocess.resize(img.unsqueeze(0))[0])
            out.ready_rows.append(i)


def identity_collate(x: Any) -> Any:
    """``collate_fn`` for a dataset whose items are already batches."""
    return x
