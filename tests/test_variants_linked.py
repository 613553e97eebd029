"""dm2c-linked (train.variants.LinkedTrainer): dm2c-anchor plus a paired term on the train pairs the
unpairing left linked. Real data: the Wikipedia benchmark at ratio 1 (no links), and UCI mfeat fou + kar
through the real stages at ratio 0.5 with the test pairs kept linked (so translation can be checked
against the true partner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mixbench.errors import ConfigError
from test_dm2c import SHORT
from train import DM2C, TrainConfig, get_variant
from train.data import BenchmarkData
from train.runlog import RunLog
from train.variants import LinkedTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
MEDIUM = {"pretrain_epochs": 20, "epochs": 30, "n_init": 3, "device": "cpu"}


@pytest.fixture(scope="module")
def uci_half_linked(tmp_path_factory: pytest.TempPathFactory, uci_dir: Path) -> Path:
    """UCI fou + kar (recipe data/recipes/uci-mfeat.toml) with half of the train pairs broken and every
    test pair kept linked: 800 linked train pairs, 400 + 400 unpaired rows."""
    from mixbench.run import run_recipe

    root = tmp_path_factory.mktemp("linked-uci")
    run_recipe(REPO / "data" / "recipes" / "uci-mfeat.toml", out=root, until="unpair",
               overrides={"prep": {"root": str(uci_dir)}, "unpair": {"ratio": 0.5, "test_ratio": 0.0}})
    return root / "unpair"


def test_registered_with_checked_options() -> None:
    assert get_variant("dm2c-linked").trainer is LinkedTrainer
    cfg = TrainConfig.from_dict({"variant": "dm2c-linked", "variant_options": {"link_weight": 2.5, "anchor": "text"}})
    assert cfg.options().link_weight == 2.5
    with pytest.raises(ConfigError, match="link_weight"):
        TrainConfig.from_dict({"variant": "dm2c-linked", "variant_options": {"link_weight": -1}})
    with pytest.raises(ConfigError, match="unknown key 'link_wieght'"):
        TrainConfig.from_dict({"variant": "dm2c-linked", "variant_options": {"link_wieght": 1}})


def test_without_links_it_is_the_anchor_variant(wiki_bench: Path) -> None:
    """Ratio 1 leaves no pair: same weights, same clusters, same scores as dm2c-anchor; the link term is 0."""
    a = DM2C(variant="dm2c-anchor", seed=2, **SHORT).fit(wiki_bench)
    b = DM2C(variant="dm2c-linked", seed=2, **SHORT).fit(wiki_bench)
    assert b.trainer_.n_linked == 0
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(a.predict("test"), b.predict("test"))
    assert a.score("test") == b.score("test")
    joint = [r for r in b.history_ if r["phase"] == "joint"]
    assert joint and all(r["link"] == 0.0 for r in joint)


def _partner_rank(model: DM2C, data: BenchmarkData, split: str) -> float:
    """Mean fraction of the anchor-modality rows of linked pairs that lie closer to a translated row than
    its own partner does (0 = every translation lands on its partner, 0.5 = chance)."""
    tr = model.trainer_
    s = data.splits[split]
    ia, ib = s.linked()
    with torch.no_grad():
        u = tr.unify(s)
    n_first = s.n(tr.modalities[0])
    first, second = u[:n_first][ia], u[n_first:][ib]
    own, translated = (first, second) if tr.anchor == 0 else (second, first)
    d = torch.cdist(translated, own)
    return float((d < d.diag()[:, None]).float().mean())


def test_links_teach_the_translation(uci_half_linked: Path) -> None:
    """Trained with the 800 linked train pairs, held-out test rows are translated nearer their true
    partner than by dm2c-anchor (which ignores the links), and the clustering is better."""
    data = BenchmarkData.from_store(uci_half_linked, "cpu")
    assert len(data.splits["train"].linked()[0]) == 800 and len(data.splits["test"].linked()[0]) == 400
    anchor = DM2C(variant="dm2c-anchor", seed=0, **MEDIUM).fit(data)
    linked = DM2C(variant="dm2c-linked", seed=0, **MEDIUM).fit(data)
    assert linked.trainer_.n_linked == 800 and linked.trainer_.anchor == anchor.trainer_.anchor
    rank_anchor, rank_linked = _partner_rank(anchor, data, "test"), _partner_rank(linked, data, "test")
    assert rank_anchor > 0.47  # chance: the unpaired mapping knows nothing of the partners
    assert rank_linked < rank_anchor - 0.04
    assert linked.score("test")["acc"] > anchor.score("test")["acc"] + 0.03
    link = [r["link"] for r in linked.history_ if r["phase"] == "joint"]
    assert all(np.isfinite(link)) and link[-1] < 0.95 * link[0]  # two MSEs of whitened features: ~2 at chance


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


class Interrupt(Exception):
    pass


def test_resume_with_links_gives_the_uninterrupted_run(uci_half_linked: Path, tmp_path: Path) -> None:
    """The per-epoch order of the linked pairs comes from the checkpointed generator: an interrupted
    run resumes to the same losses and weights."""
    run = {"pretrain_epochs": 2, "epochs": 4, "n_init": 2, "device": "cpu", "checkpoint_every": 2,
           "variant": "dm2c-linked"}
    full = DM2C(**run).fit(uci_half_linked, checkpoint_dir=tmp_path / "full", runlog=RunLog(tmp_path / "full"))

    def stop(phase: str, epoch: int, row: dict) -> None:
        if (phase, epoch) == ("joint", 3):
            raise Interrupt

    with pytest.raises(Interrupt):
        DM2C(**run).fit(uci_half_linked, checkpoint_dir=tmp_path / "cut", runlog=RunLog(tmp_path / "cut"), callback=stop)
    resumed = DM2C(**run).fit(uci_half_linked, checkpoint_dir=tmp_path / "cut", runlog=RunLog(tmp_path / "cut"))
    assert resumed.resumed_
    assert _strip(resumed.history_) == _strip(full.history_)
    a, b = full.model_.state_dict(), resumed.model_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics_ == full.metrics_


@pytest.fixture(scope="module")
def uci_decoupled(tmp_path_factory: pytest.TempPathFactory, uci_dir: Path) -> Path:
    """UCI fou + kar with half of the train pairs and every test pair *decoupled* (mode = "decouple": both
    halves kept, the link removed): 800 linked train pairs, 800 + 800 unlinked train rows."""
    from mixbench.run import run_recipe

    root = tmp_path_factory.mktemp("decoupled-uci")
    run_recipe(REPO / "data" / "recipes" / "uci-mfeat.toml", out=root, until="unpair",
               overrides={"prep": {"root": str(uci_dir)}, "unpair": {"ratio": 0.5, "mode": "decouple"}})
    return root / "unpair"


def test_on_a_decouple_store_the_links_are_the_pairs_left(uci_decoupled: Path, tmp_path: Path) -> None:
    """A decouple store: the paired term sees exactly the store's still-linked pairs; the decoupled halves
    (hidden partners in the selection file) are unlinked instances, never a link; every row is scored."""
    from train import train
    from train.repairing import hidden_partners

    data = BenchmarkData.from_store(uci_decoupled, "cpu")
    tr = data.splits["train"]
    a, b = data.modalities
    assert tr.n(a) == tr.n(b) == 1600 and data.splits["test"].n(a) == 400
    model = DM2C(variant="dm2c-linked", seed=0, pretrain_epochs=2, epochs=3, n_init=2, device="cpu").fit(data)
    t = model.trainer_
    assert t.n_linked == 800 and not len(data.splits["test"].linked()[0])
    ia, ib = (x.numpy() for x in tr.linked())
    assert np.array_equal(tr.pair[a].numpy()[ia], tr.pair[b].numpy()[ib])  # a link joins the rows of one pair
    hid_a, hid_b = hidden_partners(data)["train"]
    assert len(hid_a) == 800 and not set(hid_a) & set(ia) and not set(hid_b) & set(ib)
    link = [r["link"] for r in model.history_ if r["phase"] == "joint"]
    assert link and all(np.isfinite(link)) and min(link) > 0  # the term is on
    assert model.predict("test").shape == (800,) and model.predict("train").shape == (3200,)
    m = train(uci_decoupled, tmp_path / "run", {"variant": "dm2c-linked", "seed": 0, "pretrain_epochs": 2, "epochs": 3,
                                                 "n_init": 2, "device": "cpu", "plots": False})["metrics"]
    assert m["methods"]["dm2c"] == model.metrics_ and "kmeans-linked" in m["methods"]
