"""exif_orientation: images turned upright by their EXIF tag (opt-in), on every decode path."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_encode import build_raw_store, clip_table, photo, run_encode, write_tiny_clip

from embed.images import (
    DEFAULT_MAX_PIXELS,
    EXIF_ORIENTATION,
    decode_cpu,
    device_decodable,
)

ROTATE_90_CW = 6  # EXIF orientation 6: the stored pixels must be turned 90° clockwise to be upright


def _encoded(img: Image.Image, fmt: str, orientation: int | None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[EXIF_ORIENTATION] = orientation
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def upright() -> Image.Image:
    return photo(np.random.default_rng(3), 40, 24)  # 40 wide, 24 high: a rotation shows in the shape


def test_decode_cpu_turns_the_image_upright_only_when_asked(upright: Image.Image) -> None:
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    data = _encoded(stored, "PNG", ROTATE_90_CW)
    turned, _ = decode_cpu(data, exif_orientation=True)
    np.testing.assert_array_equal(turned.permute(1, 2, 0).numpy(), np.asarray(upright.convert("RGB")))
    as_stored, _ = decode_cpu(data)
    assert tuple(as_stored.shape) == (3, 40, 24)  # the default keeps the stored pixels, as open_clip does


def test_jpegs_with_an_orientation_go_to_pil_when_exif_is_on(upright: Image.Image) -> None:
    tagged = _encoded(upright, "JPEG", ROTATE_90_CW)
    plain = _encoded(upright, "JPEG", None)
    upright_tag = _encoded(upright, "JPEG", 1)
    assert device_decodable(tagged, DEFAULT_MAX_PIXELS) and not device_decodable(tagged, DEFAULT_MAX_PIXELS, True)
    assert device_decodable(plain, DEFAULT_MAX_PIXELS, True) and device_decodable(upright_tag, DEFAULT_MAX_PIXELS, True)


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_encode_gives_the_tagged_and_the_upright_file_the_same_features(
    upright: Image.Image, tmp_path: Path, decode: str
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "upright.png").write_bytes(_encoded(upright, "PNG", None))
    (root / "tagged.png").write_bytes(_encoded(upright.transpose(Image.Transpose.ROTATE_90), "PNG", ROTATE_90_CW))
    rows = {"train": [("upright.png", "a red cat", 0), ("tagged.png", "a blue dog", 1)] * 2}
    src = build_raw_store(tmp_path / "raw", root, rows)
    clip = write_tiny_clip(tmp_path / "models")

    def features(**kw: Any) -> np.ndarray:
        enc = {"image": clip_table(clip, decode=decode, **kw), "text": {"encoder": "bow"}}
        return run_encode(src, tmp_path / f"enc-{len(kw)}", enc).load("train", "image")["feat"]

    on = features(exif_orientation=True)
    np.testing.assert_allclose(on[0], on[1], atol=1e-6)
    off = features()
    assert np.abs(off[0] - off[1]).max() > 1e-3
