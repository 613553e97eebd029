"""End to end from an image-only folder: `mixbench run` with a recipe turns class folders of JPEGs
(one empty, one truncated) into a paired store through TAC's WordNet-noun text space (a tiny
random open_clip: no weights can be downloaded here), then a mixed-modal benchmark, then trains.
Bad images are rejected and accounted for; a store that already has text is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embed import wordnet
from mixbench.cli import main
from mixbench.errors import ConfigError

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSES = ["sunset", "forest", "ocean"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for i in range(16):
            base = np.zeros((40 + 4 * (i % 4), 56, 3))
            base[..., c] = 180
            pix = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pix).save(root / "images" / name / f"{i:02d}.jpg", "JPEG", quality=90)
    (root / "images" / "forest" / "03.jpg").write_bytes(b"")  # empty: rejected at prep
    good = (root / "images" / "ocean" / "05.jpg").read_bytes()
    (root / "images" / "ocean" / "05.jpg").write_bytes(good[:150])  # truncated: rejected at embed
    (root / "Tiny.json").write_text(json.dumps(TINY_CLIP))
    # the first 400 nouns of the shipped WordNet list (the whole list is a CPU-hour through 7 prompts)
    (root / "nouns.txt").write_text("".join(f"{w}\n" for w in wordnet.read_list()[:400]))
    return root


def _recipe(root: Path, *, ratio: float, train: str) -> Path:
    path = root / f"images-{ratio}.toml"
    path.write_text(f"""
name = "images"
seed = 0
[prep]
adapter = "image-folder"
root = "images"
test_fraction = 0.25
max_reject_fraction = 0.1
[embed]
max_reject_fraction = 0.1
[embed.encoders.image]
encoder = "open_clip"
model = "Tiny"
model_config = "Tiny.json"
allow_random = true
workers = 0
batch_size = 16
[embed.text_source]
vocabulary = "nouns.txt"
noun_batch = 200
[unpair]
ratio = {ratio}
test_ratio = {ratio}
[train]
{train}
""")
    return path


def test_image_folder_to_mixed_modal_benchmark(image_folder: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    recipe = _recipe(image_folder, ratio=1.0, train="batch_size = 8\npretrain_epochs = 2\nepochs = 2\nn_init = 2\nbaselines = false\n"
                                                    "plots = false")
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    assert "dm2c" in capsys.readouterr().out

    prep_m = json.loads((out / "prep" / "manifest.json").read_text())
    assert list(prep_m["modalities"]) == ["image"] and prep_m["info"]["rejects"]["by_reason"] == {"empty file": 1}
    emb = json.loads((out / "embed" / "manifest.json").read_text())
    assert list(emb["modalities"]) == ["image", "text"]
    ts = emb["info"]["text_source"]
    assert ts["vocabulary_rows"] == 400 and ts["centres"] == 1 and 1 <= ts["nouns_kept"] <= 5  # 35 images / 300
    assert ts["templates"][0] == "itap of a {}." and ts["retrieval_temperature"] == 0.005
    kept = json.loads((out / "embed" / "textspace" / "textspace.json").read_text())
    assert len(kept["nouns"]) == ts["nouns_kept"] and set(kept["nouns"]) <= set(wordnet.read_list()[:400])
    assert emb["info"]["rejects"]["by_reason"] == {"truncated-image": 1}  # decoded (and refused) at embed
    total = 0
    for split, acc in emb["info"]["accounting"].items():
        img = acc["image"]
        assert img["input"] == img["kept"] + img["rejected"] == prep_m["info"]["accounting"][split]["image"]["kept"]
        assert acc["text"]["kept"] == img["kept"], split  # one retrieved text half per kept image
        total += img["kept"] + img["rejected"] + prep_m["info"]["accounting"][split]["image"]["rejected"]
    assert total == 48  # every image of the folder: kept, or rejected at prep or at embed
    bench = json.loads((out / "unpair" / "manifest.json").read_text())
    rows = bench["splits"]["train"]["rows"]
    assert rows["image"] + rows["text"] == emb["splits"]["train"]["rows"]["image"]  # ratio 1: one half each
    metrics = json.loads((out / "train" / "metrics.json").read_text())
    assert "dm2c" in metrics["methods"]


def test_heads_on_the_image_folder_benchmark(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe = _recipe(image_folder, ratio=0.5, train='method = "tac"\nplots = false\nbaselines = false\n'
                                                    'method_options = {epochs = 2, batch_size = 4, neighbours = 3}')
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    metrics = json.loads((out / "train" / "metrics.json").read_text())
    assert {"tac", "tac-image"} == set(metrics["methods"]) and metrics["linked_train_pairs"] >= 4
    for method, opts in (("concat-kmeans", "restarts=2"), ("dxmc", "epochs=2")):
        args = ["train", str(out / "unpair"), str(tmp_path / method), "--set", f"method={method}",
                "--set", "plots=false", "--set", "baselines=false"]
        for o in ([f"method_options.{opts}"] + (["method_options.batch_size=4", "method_options.neighbours=3"]
                                                 if method == "dxmc" else [])):
            args += ["--set", o]
        assert main(args) == 0
        assert method in json.loads((tmp_path / method / "metrics.json").read_text())["methods"]


def test_text_source_refuses_a_store_with_text(wiki_paired: Path, tmp_path: Path) -> None:
    import embed

    with pytest.raises(ConfigError, match="already has a 'text' modality"):
        embed.embed(wiki_paired, tmp_path / "e", {"text_source": {"source": "wordnet-nouns"}})


def test_fewer_images_than_centres(image_folder: Path, tmp_path: Path) -> None:
    import embed
    import prep

    prep.prepare({"adapter": "image-folder", "root": str(image_folder / "images"), "max_reject_fraction": 0.1},
                 tmp_path / "prep")
    enc = {"encoder": "open_clip", "model": "Tiny", "model_config": str(image_folder / "Tiny.json"),
           "allow_random": True, "workers": 0}
    with pytest.raises(ConfigError, match=r"centres = 500: more semantic centres than the \d+ 'train' images"):
        embed.embed(tmp_path / "prep", tmp_path / "e", {"encoders": {"image": enc}, "max_reject_fraction": 0.1,
                                                        "text_source": {"vocabulary": str(image_folder / "nouns.txt"),
                                                                        "centres": 500}})


def test_image_folder_list_and_split_folders(image_folder: Path, tmp_path: Path) -> None:
    import prep
    from mixbench.errors import DataError

    lst = tmp_path / "images.csv"
    rows = ["image,label,split"] + [f"{image_folder}/images/{c}/{i:02d}.jpg,{c},{'test' if i > 11 else 'train'}"
                                    for c in CLASSES for i in range(16)] + [f"{image_folder}/images/gone.jpg,ocean,train"]
    lst.write_text("\n".join(rows) + "\n")
    m = prep.prepare({"adapter": "image-folder", "list": str(lst), "max_reject_fraction": 0.1}, tmp_path / "p1")
    acc = m["info"]["accounting"]
    assert acc["train"]["image"] == {"input": 37, "kept": 35, "rejected": 2}  # the empty file and the missing one
    assert acc["test"]["image"]["input"] == 12 and m["classes"] == sorted(CLASSES)
    assert m["info"]["rejects"]["by_reason"] == {"empty file": 1, "missing file": 1}

    root = tmp_path / "split"
    for split, n in (("train", 5), ("test", 2)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                (root / split / c / f"{i}.jpg").write_bytes((image_folder / "images" / c / "00.jpg").read_bytes())
    m = prep.prepare({"adapter": "image-folder", "root": str(root), "split_folders": True}, tmp_path / "p2")
    assert m["splits"]["train"]["rows"]["image"] == 15 and m["splits"]["test"]["rows"]["image"] == 6
    with pytest.raises(DataError, match="no 'label' column"):
        (tmp_path / "bad.csv").write_text("image\na.jpg\n")
        prep.prepare({"adapter": "image-folder", "list": str(tmp_path / "bad.csv")}, tmp_path / "p3")
    with pytest.raises(ConfigError, match="either root"):
        prep.prepare({"adapter": "image-folder"}, tmp_path / "p4")
