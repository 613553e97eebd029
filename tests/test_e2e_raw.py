"""End to end from raw files: a folder of images with captions (a CSV manifest, one corrupt image)
goes through `mixbench run` with an open_clip encoder (a tiny local architecture, random init:
no weights can be downloaded here) and, in a second recipe, a CNN + TF-IDF, into reduce, unpair
and train. The corrupt image is rejected and accounted for all the way to the benchmark."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixbench.cli import main

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WORDS = {
    0: "red sunset sky warm evening glow",
    1: "green forest tree leaf moss fern",
    2: "blue ocean wave water sea tide",
}
SHORT = ["--set", "train.pretrain_epochs=2", "--set", "train.epochs=2", "--set", "train.n_init=2",
         "--set", "train.plots=false"]


@pytest.fixture(scope="module")
def raw_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 image/caption pairs in 3 classes (colour and words follow the class), one corrupt JPEG."""
    root = tmp_path_factory.mktemp("raw")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(36):
        label = i % 3
        base = np.zeros((48 + 4 * (i % 5), 64, 3), dtype=np.float64)
        base[..., label] = 180
        pix = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
        name = f"img{i:03d}.jpg"
        Image.fromarray(pix).save(images / name, "JPEG", quality=90)
        words = rng.choice(WORDS[label].split(), size=4)
        rows.append({"id": f"p{i:03d}", "image": f"images/{name}", "text": " ".join(words),
                     "label": ["sunset", "forest", "ocean"][label], "split": "test" if i >= 28 else "train"})
    (images / "img005.jpg").write_bytes((images / "img005.jpg").read_bytes()[:200])  # truncated
    with open(root / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "MixbenchE2ETinyCLIP.json").write_text(json.dumps(TINY_CLIP))
    return root


def _recipe(root: Path, name: str, encoders: str) -> Path:
    path = root / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
seed = 0
[prep]
adapter = "raw-pairs"
manifest = "pairs.csv"
max_reject_fraction = 0.1
[embed]
dim = 6
whiten = true
max_reject_fraction = 0.1
{encoders}
[unpair]
ratio = 1.0
test_ratio = 1.0
[train]
batch_size = 8
""")
    return path


CLIP = """
[embed.encoders.image]
encoder = "open_clip"
model = "MixbenchE2ETinyCLIP"
model_config = "MixbenchE2ETinyCLIP.json"
allow_random = true
workers = 0
batch_size = 8
[embed.encoders.text]
encoder = "open_clip"
model = "MixbenchE2ETinyCLIP"
model_config = "MixbenchE2ETinyCLIP.json"
allow_random = true
batch_size = 8
"""

CNN_TFIDF = """
[embed.encoders.image]
encoder = "cnn"
model = "torchvision:resnet18"
allow_random = true
image_size = 64
resize_size = 72
workers = 0
batch_size = 8
[embed.encoders.text]
encoder = "tfidf"
"""


@pytest.mark.parametrize(("name", "encoders"), [("raw-clip", CLIP), ("raw-cnn", CNN_TFIDF)])
def test_raw_images_through_the_whole_pipeline(raw_dataset: Path, tmp_path: Path, name: str, encoders: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / name
    assert main(["run", str(_recipe(raw_dataset, name, encoders)), "--out", str(out), *SHORT]) == 0
    assert "dm2c" in capsys.readouterr().out

    embedded = json.loads((out / "embed" / "manifest.json").read_text())
    rejects = embedded["info"]["rejects"]
    assert rejects["count"] == 2  # the truncated image and its caption (partner-rejected)
    reasons = {item["reason"] for item in rejects["items"]}
    assert "truncated-image" in reasons and any(r.startswith("partner-rejected") for r in reasons)
    acc = embedded["info"]["accounting"]["train"]
    for modality in ("image", "text"):
        assert acc[modality]["input"] == acc[modality]["kept"] + acc[modality]["rejected"] == 28
    assert embedded["modalities"]["image"]["feat"]["shape"] == [6]
    assert embedded["modalities"]["text"]["feat"]["shape"] == [6]

    bench = json.loads((out / "unpair" / "manifest.json").read_text())
    rows = bench["splits"]["train"]["rows"]
    assert rows["image"] + rows["text"] == 27 and abs(rows["image"] - rows["text"]) <= 1

    metrics = json.loads((out / "train" / "metrics.json").read_text())
    assert {"dm2c", "kmeans-pooled", "kmeans-centred"} <= set(metrics["methods"])
    assert main(["inspect", str(out / "embed")]) == 0
    assert "truncated-image" in capsys.readouterr().out
