"""A CUDA out-of-memory error while resizing full-size images halves the chunk and the run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_encode import clip_table, run_encode, toy  # noqa: F401  (toy: the module's fixture)

from embed import encode


def test_resize_oom_halves_the_chunk_and_gives_the_same_store(toy: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    enc = {"image": clip_table(toy["clip"], decode="device", batch_size=8), "text": {"encoder": "bow"}}
    ref = run_encode(toy["src"], toy["tmp"] / "resize-ref", enc)
    real = encode.resize_many
    sizes: list[int] = []

    def small_memory(imgs: Any, pre: Any) -> torch.Tensor:
        sizes.append(len(imgs))
        if len(imgs) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(imgs, pre)

    monkeypatch.setattr(encode, "resize_many", small_memory)
    got = run_encode(toy["src"], toy["tmp"] / "resize-oom", enc)
    assert max(sizes) > 2 and sizes[-1] <= 2  # it tried a full batch, then went on in halves
    for split in ("train", "test"):
        np.testing.assert_array_equal(got.load(split, "image")["feat"], ref.load(split, "image")["feat"])
    assert got.info["rejects"] == ref.info["rejects"]


def test_resize_is_chunked_in_row_order(tmp_path: Path) -> None:
    from embed.encoders.base import AdaptiveBatch
    from embed.images import Preprocess

    pre = Preprocess(size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    rng = np.random.default_rng(0)
    imgs = [torch.as_tensor(rng.integers(0, 255, (3, 10 + i, 12), dtype=np.uint8)) for i in range(5)]
    whole = encode.resize_many(imgs, pre)
    np.testing.assert_array_equal(encode._resize(imgs, pre, AdaptiveBatch(2, "test")).numpy(), whole.numpy())
