"""Encoders and the image pipeline, piece by piece: registry and config errors, open_clip weights
(random/tag/hub/local file + sha256 + preprocess_from), CNN backbones, TF-IDF/BoW against
scikit-learn, preprocessing against open_clip's own transform, decoding of odd files, and the
out-of-memory halving. CPU, offline, tiny models."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embed.encoders import create_encoder, list_encoders, make_encoder_config
from embed.encoders.base import AdaptiveBatch, seeded_init
from embed.images import (
    EMPTY,
    MISSING,
    TOO_LARGE,
    TRUNCATED,
    UNDECODABLE,
    ImageReject,
    Preprocess,
    decode_cpu,
    decode_jpegs_on_device,
    device_decodable,
    jpeg_complete,
    read_file,
    resize_many,
    sniff_format,
)
from mixbench.errors import ConfigError, DataError
from test_encode import TINY, clip_table, photo, write_tiny_clip

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clip_cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("models"))


def jpeg_bytes(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


# -- registry and configs ------------------------------------------------------------------------
def test_registry_and_config_errors() -> None:
    assert list_encoders() == ["open_clip", "cnn", "tfidf", "bow", "features"]
    with pytest.raises(ConfigError, match=r"\[x\] encoder = 'tf-idf': unknown encoder. Did you mean 'tfidf'"):
        make_encoder_config({"encoder": "tf-idf"}, "[x]")
    with pytest.raises(ConfigError, match=r"unknown key 'max_feature'. Did you mean 'max_features'"):
        make_encoder_config({"encoder": "tfidf", "max_feature": 10}, "[x]")
    with pytest.raises(ConfigError, match="'encoder' is required"):
        make_encoder_config({"model": "ViT-B-32"}, "[x]")
    with pytest.raises(ConfigError, match="random initialisation.*allow_random = true"):
        make_encoder_config({"encoder": "open_clip", "model": "ViT-B-32"}, "[x]")
    with pytest.raises(ConfigError, match="must be LIBRARY:ARCH"):
        make_encoder_config({"encoder": "cnn", "model": "resnet18", "allow_random": True}, "[x]")
    with pytest.raises(ConfigError, match="decode = 'gpu': must be one of"):
        make_encoder_config({"encoder": "cnn", "model": "timm:resnet18", "allow_random": True, "decode": "gpu"}, "[x]")
    cfg = make_encoder_config({"encoder": "open_clip", "pretrained": "laion2b_s34b_b79k"})
    assert cfg.to_dict()["precision"] == "auto" and cfg.to_dict()["model"] == "ViT-B-32"


def test_unknown_open_clip_model_lists_close_names() -> None:
    with pytest.raises(ConfigError) as err:
        create_encoder({"encoder": "open_clip", "model": "ViT-B-32x", "allow_random": True}, CPU, input_kind="image")
    assert "not an open_clip architecture" in str(err.value) and "ViT-B-32" in str(err.value)


def test_offline_tag_and_hub_fail_fast_with_a_way_out() -> None:
    import os

    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("needs HF_HUB_OFFLINE=1 (tests/conftest.py sets it unless overridden)")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"could not load the hub model.*HF_HUB_OFFLINE=1 is set.*pretrained = <file>"):
        create_encoder({"encoder": "open_clip", "model": "hf-hub:timm/ViT-B-16-SigLIP"}, CPU, input_kind="image")
    with pytest.raises(ConfigError, match=r"could not load the pretrained tag 'laion2b_s34b_b79k'"):
        create_encoder({"encoder": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}, CPU)
    with pytest.raises(ConfigError, match=r"neither a pretrained tag of ViT-B-32 \(tags: .*openai.*\) nor an existing file"):
        create_encoder({"encoder": "open_clip", "model": "ViT-B-32", "pretrained": "laion9b"}, CPU)
    with pytest.raises(ConfigError, match=r"could not load timm's pretrained resnet18.*HF_HUB_OFFLINE=1"):
        create_encoder({"encoder": "cnn", "model": "timm:resnet18", "weights": "pretrained"}, CPU)
    assert time.perf_counter() - t0 < 30


def test_open_clip_towers_local_checkpoint_sha256_and_preprocess_from(clip_cfg: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip
    from open_clip import pretrained as oc_pretrained
    from mixbench.store.manifest import sha256_file

    rand = create_encoder(clip_table(clip_cfg), CPU, input_kind="image")
    again = create_encoder(clip_table(clip_cfg), CPU, input_kind="image")
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(rand.embed(x), again.embed(x))  # seeded random init: same in every process
    other = create_encoder(clip_table(clip_cfg, seed=1), CPU, input_kind="image")
    assert not torch.allclose(rand.embed(x), other.embed(x))
    ckpt = tmp_path / "tiny.pt"
    torch.save(rand.clip.model.state_dict(), ckpt)
    sha = sha256_file(ckpt)
    # a local file: sha256 checked, preprocess_from required, the tag's preprocessing used and recorded
    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY, {"fake": oc_pretrained._slpcfg(hf_hub="nowhere/x")})
    local = dict(clip_table(clip_cfg, allow_random=False, pretrained=str(ckpt)))
    with pytest.raises(ConfigError, match=r"is a local file: say which weights it holds with preprocess_from = <tag> \(tags of .*: fake\)"):
        create_encoder(local, CPU)
    with pytest.raises(ConfigError, match=f"has sha256 {sha}, but the recipe expects {'1' * 64}"):
        create_encoder({**local, "sha256": "1" * 64, "preprocess_from": "fake"}, CPU)
    with pytest.raises(ConfigError, match=r"preprocess_from = 'nope': not a pretrained tag"):
        create_encoder({**local, "preprocess_from": "nope"}, CPU)
    enc = create_encoder({**local, "sha256": sha, "preprocess_from": "fake"}, CPU, input_kind="image")
    assert torch.equal(enc.embed(x), rand.embed(x)) is False  # other mean/std → other features
    d = enc.describe()
    assert d["weights"] == {"source": "file", "path": str(ckpt), "sha256": sha}
    assert d["preprocess"]["mean"] == [0.5, 0.5, 0.5] and d["preprocess"]["preprocess_from"] == "fake"
    assert rand.describe()["preprocess"]["mean"] == list(open_clip.OPENAI_DATASET_MEAN)
    for a, b in zip(enc.clip.model.state_dict().values(), rand.clip.model.state_dict().values()):
        assert torch.equal(a, b)
    # the text tower of the same weights
    txt = create_encoder({**local, "sha256": sha, "preprocess_from": "fake"}, CPU, input_kind="text")
    f = txt.encode(["a red car", "a cat on a mat", "a red car"])
    assert f.shape == (3, 32) and np.allclose(f[0], f[2]) and not np.allclose(f[0], f[1])
    assert txt.describe()["tower"] == "text" and txt.describe()["preprocess"]["tokenizer"] == "SimpleTokenizer"


def test_seeded_init_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    with seeded_init(5):
        a = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), state)
    with seeded_init(5):
        assert torch.equal(torch.rand(3), a)


def test_cnn_backbones_random_and_local_file(tmp_path: Path) -> None:
    import timm
    import torchvision

    cfg = {"encoder": "cnn", "model": "timm:resnet18", "allow_random": True, "image_size": 64}
    enc = create_encoder(cfg, CPU)
    assert enc.dim == 512 and enc.preprocess.size == (64, 64) and enc.preprocess.interpolation == "bicubic"
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    f = enc.embed(x)
    assert f.shape == (2, 512)
    # a local state dict of the full network loads strictly; features = the pooled penultimate layer
    with seeded_init(7):
        net = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    enc2 = create_encoder({**cfg, "allow_random": False, "weights": str(path)}, CPU)
    net.reset_classifier(0)
    net.eval()
    with torch.inference_mode():
        ref = net(enc2.preprocess.normalize(x))
    assert torch.allclose(enc2.embed(x), ref, atol=1e-5)
    assert enc2.describe()["weights"]["source"] == "file"
    with pytest.raises(ConfigError, match="does not fit the architecture"):
        create_encoder({**cfg, "model": "timm:resnet10t", "allow_random": False, "weights": str(path)}, CPU)
    tv = create_encoder({"encoder": "cnn", "model": "torchvision:resnet18", "allow_random": True, "image_size": 64}, CPU)
    assert tv.dim == 512 and tv.preprocess.resize_size == 73 and tv.preprocess.size == (64, 64)
    assert tv.preprocess.interpolation == "bilinear" and tv.describe()["preprocess"]["preprocess_from"] == "DEFAULT"
    assert tv.preprocess.mean == (0.485, 0.456, 0.406)
    with pytest.raises(ConfigError, match=r"not a torchvision model.*Close names: resnet18"):
        create_encoder({"encoder": "cnn", "model": "torchvision:resnet-18", "allow_random": True}, CPU)
    with pytest.raises(ConfigError, match=r"torchvision resnet18 has weights IMAGENET1K_V1, DEFAULT"):
        create_encoder({"encoder": "cnn", "model": "torchvision:resnet18", "weights": "IMAGENET1K_V9"}, CPU)
    assert torchvision.__version__


# -- classic text features ---------------------------------------------------------------------
TRAIN = ["A red car on the road.", "A cat, on a mat!", "the dog and the cat", "red red red", "road trip"]
TEST = ["a zebra on the road", "cat cat dog", ""]


def test_tfidf_matches_sklearn_and_is_fitted_on_train_only() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from embed.encoders.text import wordpunct

    enc = create_encoder({"encoder": "tfidf"}, CPU, input_kind="text")
    enc.fit([TRAIN[:2], TRAIN[2:]])  # two "shards"
    ref = TfidfVectorizer(tokenizer=wordpunct, token_pattern=None).fit(TRAIN)
    assert enc.vocabulary() == list(ref.get_feature_names_out())
    assert "zebra" not in enc.vocabulary() and "." in enc.vocabulary()
    assert np.allclose(enc.encode(TEST), ref.transform(TEST).toarray(), atol=1e-6)
    assert enc.dim == len(ref.vocabulary_)
    many = TEST * 1500  # more rows than one transform block
    assert np.array_equal(enc.encode(many)[-3:], enc.encode(TEST))
    sk = create_encoder({"encoder": "tfidf", "tokenizer": "sklearn", "sublinear_tf": True, "max_features": 4},
                        CPU, input_kind="text")
    sk.fit([TRAIN])
    ref2 = TfidfVectorizer(sublinear_tf=True, max_features=4).fit(TRAIN)
    assert np.allclose(sk.encode(TEST), ref2.transform(TEST).toarray(), atol=1e-6)
    # state survives the broadcast to other ranks
    clone = create_encoder({"encoder": "tfidf"}, CPU, input_kind="text")
    clone.load_fitted_state(enc.fitted_state())
    assert np.array_equal(clone.encode(TEST), enc.encode(TEST))
    bow = create_encoder({"encoder": "bow"}, CPU, input_kind="text")
    bow.fit([TRAIN])
    assert bow.encode(["red red car"]).max() == 2.0
    with pytest.raises(DataError, match="cannot fit a vocabulary"):
        create_encoder({"encoder": "bow"}, CPU, input_kind="text").fit([["   "]])


def test_tfidf_on_tag_vectors_streams_document_frequencies() -> None:
    from sklearn.feature_extraction.text import TfidfTransformer

    rng = np.random.default_rng(0)
    train = rng.integers(0, 3, (40, 9)).astype(np.float32)
    test = rng.integers(0, 3, (7, 9)).astype(np.float32)
    enc = create_encoder({"encoder": "tfidf", "norm": "l1"}, CPU, input_kind="feat")
    enc.fit([train[:15], train[15:]])
    ref = TfidfTransformer(norm="l1").fit(train)
    assert np.allclose(enc.encode(test), ref.transform(test).toarray(), atol=1e-6)
    bow = create_encoder({"encoder": "bow", "binary": True}, CPU, input_kind="feat")
    assert not bow.needs_fit
    bow.set_input_dim(9)
    assert np.array_equal(bow.encode(test), (test > 0).astype(np.float32))


# -- preprocessing and decoding ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
def test_preprocess_matches_open_clip_transform(mode: str) -> None:
    """Our torch resize/crop/normalise vs open_clip's PIL transform: within one grey level."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    img = photo(np.random.default_rng(1), 150, 97)
    cfg = PreprocessCfg(size=64, resize_mode=mode, fill_color=0)
    ref = image_transform_v2(cfg, is_train=False)(img)
    pre = Preprocess.from_open_clip({"size": 64, "mean": cfg.mean, "std": cfg.std, "interpolation": "bicubic",
                                     "resize_mode": mode})
    t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    ours = pre.normalize(resize_many([t], pre))[0]
    std = torch.tensor(cfg.std).view(3, 1, 1)
    assert ours.shape == ref.shape
    assert ((ours - ref) * std * 255).abs().max() <= 1.01


def test_torchvision_preset_preprocessing_matches() -> None:
    from torchvision.models import ResNet18_Weights

    img = photo(np.random.default_rng(2), 300, 260)
    t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    preset = ResNet18_Weights.IMAGENET1K_V1.transforms()
    ref = preset(t)  # on a uint8 tensor: the same torch resize we use
    from embed.encoders.cnn import _tv_preprocess

    pre = _tv_preprocess(ResNet18_Weights.IMAGENET1K_V1)  # what the cnn encoder uses for these weights
    assert (pre.size, pre.resize_size, pre.interpolation) == ((224, 224), 256, "bilinear")
    ours = pre.normalize(resize_many([t], pre))[0]
    assert torch.allclose(ours, ref, atol=2.5e-2)  # ref resizes in float, we round to uint8 like PIL


def test_decoding_odd_files(tmp_path: Path) -> None:
    im = photo(np.random.default_rng(4), 90, 70)
    jpg = jpeg_bytes(im)
    assert sniff_format(jpg) == "jpeg" and jpeg_complete(jpg)
    assert not jpeg_complete(jpg[: len(jpg) // 2])
    with pytest.raises(ImageReject) as rej:
        decode_cpu(jpg[: len(jpg) // 2])
    assert rej.value.reason == TRUNCATED
    for mode, fmt in (("L", "PNG"), ("CMYK", "JPEG"), ("RGBA", "WEBP"), ("P", "PNG"), ("LA", "PNG"), ("I;16", "PNG")):
        buf = io.BytesIO()
        im.convert(mode).save(buf, fmt)
        out, reduced = decode_cpu(buf.getvalue())
        assert out.shape == (3, 70, 90) and out.dtype == torch.uint8 and not reduced
    assert device_decodable(jpg, 10**9) and not device_decodable(jpeg_bytes(im.convert("CMYK")), 10**9)
    assert not device_decodable(jpeg_bytes(im, progressive=True), 10**9)
    with pytest.raises(ImageReject) as rej:
        decode_cpu(b"GIF89a not really")
    assert rej.value.reason == UNDECODABLE
    # bounded memory: a JPEG above max_pixels is decoded at a reduced DCT scale, a PNG is rejected
    out, reduced = decode_cpu(jpg, max_pixels=2000)
    assert reduced and out.shape[1] * out.shape[2] <= 2000 and out.shape[1:] == (35, 45)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    with pytest.raises(ImageReject) as rej:
        decode_cpu(buf.getvalue(), max_pixels=2000)
    assert rej.value.reason == TOO_LARGE
    with pytest.raises(ImageReject) as rej:
        decode_cpu(jpg, max_pixels=10)
    assert rej.value.reason == TOO_LARGE
    (tmp_path / "zero.jpg").write_bytes(b"")
    for name, reason in (("zero.jpg", EMPTY), ("nope.jpg", MISSING)):
        with pytest.raises(ImageReject) as rej:
            read_file(tmp_path / name)
        assert rej.value.reason == reason


def test_device_jpeg_decode_on_cpu_equals_pil_and_isolates_bad_files() -> None:
    import warnings

    rng = np.random.default_rng(5)
    datas = [jpeg_bytes(photo(rng, 64 + 8 * i, 48)) for i in range(3)]
    bad = datas[1][:200] + b"\x00" * 50 + datas[1][250:]
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in (datas[0], bad, datas[2])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # silenced locally inside, never leaks
        out = decode_jpegs_on_device(tensors, CPU)
    for i in (0, 2):
        assert out[i] is not None and torch.equal(out[i], decode_cpu(datas[i])[0])


def test_adaptive_batch_halves_on_out_of_memory(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[int, int]] = []

    def fn(a: int, b: int) -> torch.Tensor:
        calls.append((a, b))
        if b - a > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.arange(a, b)

    batch = AdaptiveBatch(16, "test forward")
    with caplog.at_level(logging.WARNING):
        out = torch.cat(batch.run(fn, 21))
    assert torch.equal(out, torch.arange(21)) and batch.size == 2 and batch.halvings == 3
    assert "halving the batch size to 8" in caplog.text
    one = AdaptiveBatch(1, "x")
    with pytest.raises(torch.OutOfMemoryError):
        one.run(lambda a, b: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")), 2)


def test_image_encoder_oom_gives_the_same_features(clip_cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = create_encoder(clip_table(clip_cfg, batch_size=8), CPU, input_kind="image")
    x = torch.randint(0, 256, (7, 3, 64, 64), dtype=torch.uint8)
    ref = enc.embed(x)
    real = enc.forward

    def flaky(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(t)

    monkeypatch.setattr(enc, "forward", flaky)
    assert torch.allclose(enc.embed(x), ref, atol=1e-5) and enc.batcher.size == 1  # 7 → 3 → 1
