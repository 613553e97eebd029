"""CUDA out-of-memory inside ``decode_jpeg(..., device=cuda)`` (simulated on the CPU).

torchvision's ``decode_jpegs_cuda`` re-throws every C++ exception of a decode as a plain
``RuntimeError("Error while decoding JPEG images: ...")``, so an OOM arrives without its type.
``decode_jpegs_on_device`` must still let it propagate as ``torch.OutOfMemoryError`` (so the
caller's AdaptiveBatch halves the decode batch) instead of treating it as an undecodable image."""

from __future__ import annotations

import pytest
import torch
import torchvision.io

from embed.encoders.base import AdaptiveBatch
from embed.images import decode_jpegs_on_device

CPU = torch.device("cpu")
# what torchvision 0.29 (stable ABI) raises for an allocation failure inside the CUDA decoder
OOM_MSG = ("Error while decoding JPEG images: CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total "
           "capacity of 79.11 GiB of which 1.02 GiB is free. (originally from torch_call_dispatcher( \"aten::empty\", "
           "\"memory_format\", stack.data(), TORCH_ABI_VERSION) API call failed at ..., line 631)")


def _blobs(n: int) -> list[torch.Tensor]:
    return [torch.full((10 + i,), i, dtype=torch.uint8) for i in range(n)]


def _image(d: torch.Tensor) -> torch.Tensor:
    return torch.full((3, 2, 2), int(d[0]), dtype=torch.uint8)


def _fake_decoder(max_batch: int, bad: set[int] = frozenset(), oom_single: bool = False):  # type: ignore[assignment]
    calls: list[int] = []

    def decode_jpeg(inp, mode=None, device="cpu"):  # noqa: ANN001, ANN202
        items = inp if isinstance(inp, list) else [inp]
        calls.append(len(items))
        if isinstance(inp, list) and len(items) > max_batch:
            raise RuntimeError(OOM_MSG)
        if not isinstance(inp, list) and oom_single:
            raise RuntimeError(OOM_MSG)
        if any(int(d[0]) in bad for d in items):
            raise RuntimeError("Error while decoding JPEG images: Failed to decode batch: 3")
        out = [_image(d) for d in items]
        return out if isinstance(inp, list) else out[0]

    return decode_jpeg, calls


def test_oom_in_batched_decode_is_an_out_of_memory_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = _fake_decoder(max_batch=2)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", fake)
    with pytest.raises(torch.OutOfMemoryError, match="CUDA out of memory"):
        decode_jpegs_on_device(_blobs(4), CPU)
    assert calls == [4]  # not retried image by image as if the images were bad


def test_oom_in_single_decode_is_an_out_of_memory_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, _ = _fake_decoder(max_batch=10, bad={1}, oom_single=True)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", fake)
    with pytest.raises(torch.OutOfMemoryError):
        decode_jpegs_on_device(_blobs(3), CPU)


def test_decode_batch_halves_on_oom_and_keeps_every_image(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = _fake_decoder(max_batch=4)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", fake)
    blobs = _blobs(7)
    batcher = AdaptiveBatch(8, "decode_jpeg on cuda")
    decoded = [img for chunk in batcher.run(lambda a, b: decode_jpegs_on_device(blobs[a:b], CPU), len(blobs))
               for img in chunk]
    assert batcher.size == 3 and batcher.halvings == 1 and calls == [7, 3, 3, 1]
    assert all(img is not None for img in decoded)
    assert [int(img[0, 0, 0]) for img in decoded] == list(range(7))


def test_a_bad_image_still_falls_back_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = _fake_decoder(max_batch=10, bad={1})
    monkeypatch.setattr(torchvision.io, "decode_jpeg", fake)
    out = decode_jpegs_on_device(_blobs(3), CPU)
    assert out[1] is None and out[0] is not None and out[2] is not None
    assert calls == [3, 1, 1, 1]
