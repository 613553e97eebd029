"""DM2C model and faithful trainer on a small real benchmark (Wikipedia, 10-d, CPU, short schedules).

The benchmark store is conftest.py's ``wiki_bench`` (built by ``store_helpers.build_wiki_benchmark``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from store_helpers import build_wiki_benchmark  # noqa: F401  (other test modules import it from here)

from mixbench.errors import ConfigError, DataError
from train import DM2C, TrainConfig, TrainingDiverged, list_variants
from train.checkpoint import load_checkpoint
from train.data import BenchmarkData
from train.dm2c import Architecture, DeepAE, DM2CNet, default_hiddens

SHORT = {"pretrain_epochs": 2, "epochs": 3, "n_init": 3, "device": "cpu"}
METRICS = ("acc", "ari", "nmi", "f_score", "precision", "recall", "purity")




@pytest.fixture(scope="module")
def fitted(wiki_bench: Path) -> DM2C:
    return DM2C(**SHORT, pretrain_lr=[1e-3, 1e-3]).fit(wiki_bench)


# -- architecture ------------------------------------------------------------------------------


def test_width_rule_gives_the_reference_configurations() -> None:
    assert default_hiddens(2048) == [1024, 256, 128]  # reference train.py, Wikipedia
    assert default_hiddens(10) == [32, 16, 8]  # the 10-d benchmark's AE
    arch = Architecture.resolve(TrainConfig(), 10)
    assert arch.map_hiddens == (8, 16, 8) and arch.critic_hidden == 2 and arch.latent == 8
    arch = Architecture.resolve(TrainConfig(hiddens=[64, 4], critic_hidden=3), 10)
    assert arch.hiddens == (64, 4) and arch.map_hiddens == (4, 8, 4) and arch.critic_hidden == 3
    with pytest.raises(ConfigError, match="map_hiddens"):
        TrainConfig(hiddens=[32, 8], map_hiddens=[8, 16])
    with pytest.raises(DataError, match="at least 2"):
        default_hiddens(1)


def test_layers_follow_the_reference_code() -> None:
    ae = DeepAE(10, [32, 16, 8])
    kinds = lambda seq: [type(m).__name__ for m in seq]  # noqa: E731
    assert kinds(ae.encoder) == ["Linear", "LeakyReLU", "BatchNorm1d", "Linear", "LeakyReLU", "BatchNorm1d", "Linear"]
    assert kinds(ae.decoder) == ["Linear", "LeakyReLU", "BatchNorm1d", "Linear", "LeakyReLU", "BatchNorm1d",
                                 "Linear", "LeakyReLU"]
    assert [m.out_features for m in ae.decoder if isinstance(m, torch.nn.Linear)] == [16, 32, 10]
    net = DM2CNet(Architecture.resolve(TrainConfig(), 10), torch.Generator().manual_seed(0))
    assert [m.out_features for m in net.d_a if isinstance(m, torch.nn.Linear)] == [2, 1]
    groups = net.generator_parameters()
    assert len(groups[0]["params"]) == 2 * len(list(ae.parameters()))
    # init draws from the given generator only: same seed, same weights; global RNG untouched
    state = torch.random.get_rng_state()
    a = DM2CNet(net.arch, torch.Generator().manual_seed(1))
    b = DM2CNet(net.arch, torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(state, torch.random.get_rng_state())


# -- training ------------------------------------------------------------------------------------


def test_short_run_losses_finite_and_reconstruction_falls(fitted: DM2C) -> None:
    rows = fitted.history_
    assert [r["phase"] for r in rows] == ["pretrain-image"] * 2 + ["pretrain-text"] * 2 + ["joint"] * 3
    for m in ("image", "text"):
        rec = [r["rec"] for r in rows if r["phase"] == f"pretrain-{m}"]
        assert rec[-1] < rec[0]
    joint = [r for r in rows if r["phase"] == "joint"]
    for r in joint:
        assert r["steps"] == 17  # ceil(2173 / 128) mixed batches
        assert r["critic_steps"] == 3  # every 5th iteration
        for k in ("loss_g", "rec_image", "rec_text", "cyc_image", "cyc_text", "cycrec_image", "cycrec_text",
                  "adv", "loss_d", "d_image", "d_text"):
            assert np.isfinite(r[k]), k
        for split in ("train", "test"):
            assert all(0 <= r[f"{split}_{k}"] <= 1 for k in METRICS if k != "ari")
    assert joint[-1]["rec_image"] < rows[0]["rec"]  # the joint phase starts from the pre-trained AE
    # critic weights are clipped to ±0.05
    assert max(float(p.detach().abs().max()) for p in fitted.model_.critic_parameters()) <= 0.05 + 1e-7


def test_estimator_api(fitted: DM2C) -> None:
    test = fitted.data_.splits["test"]
    emb = fitted.transform("test")
    assert emb.shape == (693, 8) and emb.dtype == np.float32
    pred = fitted.predict("test")
    assert pred.shape == (693,) and set(np.unique(pred)) <= set(range(10))
    assert np.array_equal(pred, fitted.evaluation_.predictions["test"])
    assert fitted.score("test") == fitted.metrics_["test"]
    assert set(fitted.score("test")) == set(METRICS)
    # (features, modality) input: rows keep the caller's order
    x = torch.cat([test.x["text"], test.x["image"]]).numpy()
    flags = np.r_[np.ones(test.n("text"), int), np.zeros(test.n("image"), int)]
    out = fitted.transform((x, flags))
    np.testing.assert_allclose(out[: test.n("text")], emb[test.n("image"):], rtol=0, atol=1e-6)
    assert np.array_equal(fitted.predict((x, flags))[test.n("text"):], pred[: test.n("image")])
    params = fitted.get_params()
    assert params["epochs"] == 3 and DM2C(**params).get_params() == params
    with pytest.raises(ConfigError, match="not fitted"):
        DM2C().predict("test")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        DM2C(epoch=3)
    assert "faithful" in list_variants()
    with pytest.raises(ConfigError, match="unknown variant. Available: dm2c-anchor, dm2c-linked, faithful"):
        DM2C(variant="nope")


def test_final_figures_do_not_depend_on_eval_every(wiki_bench: Path) -> None:
    """One k-means seed is drawn per joint epoch, evaluated or not: evaluating only the final epoch
    (a sweep's setting) gives the every-epoch run's final figures bit for bit."""
    runs = {e: DM2C(**SHORT, eval_every=e).fit(wiki_bench) for e in (0, 1, 2)}
    finals = {e: [r for r in m.history_ if r["phase"] == "joint"][-1] for e, m in runs.items()}
    assert sum("test_acc" in r for r in runs[1].history_) == 3 and sum("test_acc" in r for r in runs[0].history_) == 1
    for e in (0, 2):
        assert finals[e]["kmeans_seed"] == finals[1]["kmeans_seed"]
        for k in (f"{s}_{m}" for s in ("train", "test") for m in METRICS):
            assert finals[e][k] == finals[1][k], (e, k)


def test_naive_gan_no_batchnorm_second_space(wiki_bench: Path) -> None:
    m = DM2C(pretrain_epochs=1, epochs=2, n_init=2, device="cpu", gan="naive", batchnorm=False, eval_every=0,
             unify="second").fit(wiki_bench)
    joint = [r for r in m.history_ if r["phase"] == "joint"]
    assert "test_acc" not in joint[0] and "test_acc" in joint[1]  # eval_every 0: final epoch only
    assert all(np.isfinite(r["loss_g"]) and np.isfinite(r["loss_d"]) for r in joint)
    assert not any(isinstance(mod, torch.nn.BatchNorm1d) for mod in m.model_.modules())
    # unified into the text latent space: text rows are their own encoder latents
    test = m.data_.splits["test"]
    with torch.no_grad():
        z_text = m.model_.aes[1].encoder(test.x["text"]).numpy()
    np.testing.assert_allclose(m.transform("test")[test.n("image"):], z_text, rtol=0, atol=1e-6)


def test_different_dims_are_an_error(wiki_bench: Path) -> None:
    data = BenchmarkData.from_store(wiki_bench)
    for s in data.splits.values():
        s.x["text"] = s.x["text"][:, :8]
    data.dims["text"] = 8
    with pytest.raises(DataError, match="shared dimension"):
        DM2C(**SHORT).fit(data)


def test_nan_stops_training_and_keeps_last_checkpoint(wiki_bench: Path, tmp_path: Path) -> None:
    data = BenchmarkData.from_store(wiki_bench)

    def poison(phase: str, epoch: int, row: dict) -> None:
        if phase == "pretrain-image" and epoch == 1:
            data.splits["train"].x["text"][5, 3] = float("nan")

    with pytest.raises(TrainingDiverged, match=r"phase pretrain-text, epoch 0, step \d+") as exc:
        DM2C(**SHORT, checkpoint_every=1).fit(data, checkpoint_dir=tmp_path, callback=poison)
    assert "last.pt" in str(exc.value)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["phase"] == "pretrain-image" and state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_fast_sequential_is_nn_sequential_bit_for_bit() -> None:
    """The layer loop without module-call machinery gives nn.Sequential's outputs, gradients and
    BatchNorm running statistics exactly, in train and eval mode."""
    from torch import nn

    from train.dm2c import FastSequential

    gen = torch.Generator().manual_seed(0)
    fast = DeepAE(10, [32, 16, 8])
    plain = DeepAE(10, [32, 16, 8])
    plain.encoder = nn.Sequential(*plain.encoder)
    plain.decoder = nn.Sequential(*plain.decoder)
    plain.load_state_dict(fast.state_dict())
    assert isinstance(fast.encoder, FastSequential) and type(plain.encoder) is nn.Sequential
    for step in range(3):
        x = torch.randn(37, 10, generator=gen)
        outs = []
        for model in (fast, plain):
            model.train(step < 2)
            model.zero_grad()
            rec, z = model(x)
            (rec.square().mean() + z.abs().mean()).backward()
            outs.append((rec, z, [p.grad.clone() for p in model.parameters()], model.state_dict()))
        (r1, z1, g1, s1), (r2, z2, g2, s2) = outs
        assert torch.equal(r1, r2) and torch.equal(z1, z2)
        assert all(torch.equal(a, b) for a, b in zip(g1, g2))
        assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    seen = []
    fast.encoder[0].register_forward_hook(lambda *a: seen.append(1))
    fast.encoder.__dict__.pop("_plan", None)  # a plan is made on the first call: hooks made later are not seen
    fast(torch.randn(4, 10, generator=gen))
    assert seen == [1]  # a module with hooks runs through nn.Sequential
