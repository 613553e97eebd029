"""Named DM2C variants beside the faithful trainer (``[train] variant = "<name>"``).

``dm2c-anchor``: the same model, losses and schedule as faithful DM2C (no extra training
budget); only the unification and the clustering at evaluation change. ``dm2c-linked`` (below,
:class:`LinkedTrainer`) adds a paired term on the train pairs still linked at ratio < 1.

1. An *anchor* modality is chosen without labels: the one whose training rows have the higher
   k-means silhouette in input space once far-out rows are set aside (:func:`silhouettes`; a fixed
   k-means seed, so the choice is a property of the data, not of the training seed), or the
   modality named by ``variant_options.anchor``.
2. Rows are unified into the anchor's **input** space with DM2C's own generator: anchor rows keep
   their features; a row of the other modality becomes ``Dec_anchor(G_other→anchor(Enc_other(x)))``.
3. k-means (the faithful settings) is fitted on the anchor's training rows only; every row, of
   both modalities and every split, is assigned by ``predict``.

Why: faithful DM2C clusters every row in the image latent space, so the informative modality
(Wikipedia's text: k-means ACC 0.56 alone, images 0.20) is squeezed through an 8-d bottleneck and
the text→image mapping, and the centres are pulled about by the near-structureless image rows.
Centres fitted on the anchor in its own space keep the anchor's structure; DM2C's cross-modal
generator then places the other modality's rows. Measured gains (5 seeds, final epoch, test ACC):
see the README's benchmark section.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mixbench.config import Config, option
from mixbench.errors import ConfigError

from .data import SplitTensors
from .dm2c import FaithfulTrainer
from .eval_cluster import ClusterSpec, numpy_labels as _numpy_labels
from .registry import NoOptions, Variant, register_variant

log = logging.getLogger(__name__)

SILHOUETTE_SAMPLE = 5000


register_variant(Variant(
    name="faithful",
    trainer=FaithfulTrainer,
    options_cls=NoOptions,
    description="the reference code's model, losses, optimisers and schedule (jiangyangby/DM2C code/)",
))


@dataclass(frozen=True)
class AnchorOptions(Config):
    section = "train.variant_options"
    anchor: str = option("auto", "modality the clusters are fitted in: 'auto' (the higher k-means silhouette of "
                                 "the training rows in input space, far-out rows set aside) or a modality name")


OUTLIER_FENCE = 3.0  # Tukey's far-out fence: beyond Q3 + 3 IQR of the distances to the median row


def inliers(x: torch.Tensor) -> torch.Tensor:
    """Rows within Tukey's far-out fence of their distance to the coordinate-wise median row (a bool
    mask; label-free). Far rows would each take a k-means cluster of their own."""
    dist = torch.linalg.vector_norm(x - x.median(0).values, dim=1).double().cpu().numpy()
    q1, q3 = np.percentile(dist, [25, 75])
    return torch.as_tensor(dist <= q3 + OUTLIER_FENCE * (q3 - q1), device=x.device)


def silhouettes(data_train: SplitTensors, n_clusters: int, device: torch.device) -> dict[str, float]:
    """The anchor criterion: per modality, the k-means silhouette of its training rows in input space
    once far-out rows are set aside (:func:`inliers`; k-means seed 0, so the choice is a property of
    the data, not of the training seed). Label-free.

    Why trimmed: a view that is "one big cluster plus a few far outliers" scores a high plain
    silhouette (k-means gives the outliers clusters of their own; every row of the big cluster is
    then far from every other cluster) though it separates no classes. Measured on Wikipedia with
    its image rows made so (45 rows replaced by 9 tight groups 10 median row distances out, in random
    directions; tests/test_variants.py): plain silhouette image 0.84 against text 0.42, so the plain
    choice is the image; trimmed image 0.16, text 0.42. On the shipped stores the choice is the plain
    one's (Wikipedia text 0.42 vs image 0.16; CLR text 0.27 vs image 0.16; UCI kar 0.061 vs fou
    0.052)."""
    from sklearn.metrics import silhouette_score

    from .kmeans import KMeans

    out: dict[str, float] = {}
    for m in data_train.modalities:
        x = data_train.x[m]
        x = x[inliers(x)] if len(x) > n_clusters else x
        if len(x) <= n_clusters:
            out[m] = float("-inf")
            continue
        labels = _numpy_labels(KMeans(n_clusters, n_init=10, seed=0, device=device).fit(x).labels_)
        if len(set(labels.tolist())) < 2:
            out[m] = float("-inf")
            continue
        out[m] = float(silhouette_score(x.cpu().numpy(), labels, sample_size=min(len(labels), SILHOUETTE_SAMPLE),
                                        random_state=0))
    return out


class AnchorTrainer(FaithfulTrainer):
    """Faithful training; evaluation in the anchor modality's input space (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.cfg.options()
        assert isinstance(opts, AnchorOptions)
        if opts.anchor == "auto":
            self.anchor_scores = silhouettes(self.train_split, self.n_clusters, self.device)
            name = max(self.modalities, key=lambda m: self.anchor_scores[m])
        elif opts.anchor in self.modalities:
            self.anchor_scores: dict[str, float] = {}
            name = opts.anchor
        else:
            raise ConfigError(
                f"[train] variant_options.anchor = {opts.anchor!r}: not a modality of the store; use 'auto' or one "
                f"of {', '.join(self.modalities)}."
            )
        self.anchor = self.modalities.index(name)
        self.anchor_name = name
        how = ("chosen without labels: " + ", ".join(f"{m} {v:.4f}" for m, v in self.anchor_scores.items())
               if opts.anchor == "auto" else "set by variant_options.anchor")
        log.info("%s: anchor modality '%s' (%s)", self.cfg.variant, name, how)

    def unify(self, s: SplitTensors) -> torch.Tensor:
        """Rows in the anchor's input space (first modality's rows first, as the faithful embed):
        anchor rows as they are, the other modality's as ``Dec_anchor(G_other→anchor(Enc_other(x)))``."""
        a, other = self.anchor, 1 - self.anchor
        z = self.net.aes[other].encoder(s.x[self.modalities[other]])
        mapped = (self.net.g_ba if a == 0 else self.net.g_ab)(z)[0]
        translated = self.net.aes[a].decoder(mapped)
        own = s.x[self.modalities[a]]
        return torch.cat([own, translated] if a == 0 else [translated, own])

    def cluster_spec(self) -> ClusterSpec:
        """k-means fitted on the anchor's training rows; every row of every split assigned by predict."""
        spec = super().cluster_spec()
        n_first = self.train_split.n(self.modalities[0])
        rows = (0, n_first) if self.anchor == 0 else (n_first, n_first + self.train_split.n(self.modalities[1]))
        return dataclasses.replace(spec, fit_rows=rows)

    def method_facts(self) -> dict[str, Any]:
        """What metrics.json and report.md record about the anchor (its name, how it was chosen)."""
        return {"anchor": self.anchor_name, "anchor_scores": dict(self.anchor_scores)}


register_variant(Variant(
    name="dm2c-anchor",
    trainer=AnchorTrainer,
    options_cls=AnchorOptions,
    description="faithful training; clusters fitted in the more clusterable modality's input space, the other "
                "modality translated into it by DM2C's generator (Dec_a(G_b→a(Enc_b(x))))",
))

@dataclass(frozen=True)
class LinkedOptions(AnchorOptions):
    link_weight: float = option(1.0, "weight of the paired term on the train pairs still linked (each half of a "
                                     "linked pair translated across must reproduce its partner, both directions)",
                                low=0.0)


class LinkedTrainer(AnchorTrainer):
    """``dm2c-linked``: ``dm2c-anchor`` whose cross-modal translation also learns from the train pairs
    that the unpairing left linked (ratio < 1).

    Every generator step adds, over a batch of linked pairs ``(x_a, x_b)``::

        link_weight × ( mse(Dec_b(G_ab(Enc_a(x_a))), x_b) + mse(Dec_a(G_ba(Enc_b(x_b))), x_a) )

    i.e. each half, translated into the other modality's input space exactly as the anchor evaluation
    translates a row, must reproduce its partner. The batch is ``batch_size`` pairs, an index slice
    of a per-epoch permutation drawn from the run's generator (wrapping round when an epoch has more
    steps than pairs). Everything else (data, schedule, the unpaired losses, the evaluation in the
    anchor's input space) is ``dm2c-anchor``'s; linked rows stay instances of the mixed batches too.
    Without linked pairs (ratio 1) it trains and scores exactly as ``dm2c-anchor``.

    Why input space: the same term on the latent codes (``|G_ab(z_a) − z_b|₁``, the paired form of
    DM2C's cycle term) reached 0.552 test ACC on UCI fou+kar with 20 % of the pairs linked; in input
    space 0.644 (2 seeds, full schedule; dm2c-anchor 0.470). Latent codes can shrink to lower the L1
    without aligning anything; input features cannot."""

    LOSS_TERMS = (*FaithfulTrainer.LOSS_TERMS, "link")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.cfg.options()
        assert isinstance(opts, LinkedOptions)
        self.link_weight = opts.link_weight
        ia, ib = self.train_split.linked()
        a, b = self.modalities[:2]
        self.link_x = (self.train_split.x[a][ia], self.train_split.x[b][ib])
        self.n_linked = len(ia)
        if self.n_linked < self.min_rows:
            log.info("dm2c-linked: %d linked train pair(s), fewer than a batch needs: trained as dm2c-anchor.",
                     self.n_linked)
        self._link_order: torch.Tensor | None = None
        self._link_cursor = 0

    def mixed_batches(self) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """The faithful mixed batches, then this epoch's order of the linked pairs (same generator)."""
        order, slices = super().mixed_batches()
        if self.n_linked >= self.min_rows:
            self._link_order = torch.randperm(self.n_linked, generator=self.gen).to(self.device, non_blocking=True)
            self._link_cursor = 0
        return order, slices

    def _next_linked(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._link_order is None:
            return None
        b = min(self.cfg.batch_size, self.n_linked)
        if self._link_cursor + b > self.n_linked:
            self._link_cursor = 0
        idx = self._link_order[self._link_cursor:self._link_cursor + b]
        self._link_cursor += b
        return self.link_x[0][idx], self.link_x[1][idx]

    def generator_losses(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        loss, terms, codes = super().generator_losses(x_a, x_b)
        pair = self._next_linked()
        if pair is None:
            link = loss.new_zeros(())
        else:
            net = self.net
            p_a, p_b = pair
            ae_a, ae_b = net.aes[0], net.aes[1]
            link = (F.mse_loss(ae_b.decoder(net.g_ab(ae_a.encoder(p_a))[0]), p_b)
                    + F.mse_loss(ae_a.decoder(net.g_ba(ae_b.encoder(p_b))[0]), p_a))
            loss = loss + self.link_weight * link
        terms = torch.cat([loss.detach()[None], terms[1:], link.detach()[None]])
        return loss, terms, codes


register_variant(Variant(
    name="dm2c-linked",
    trainer=LinkedTrainer,
    options_cls=LinkedOptions,
    description="dm2c-anchor plus a paired term on the train pairs still linked (ratio < 1): each half of a linked "
                "pair, translated into the other modality (Dec(G(Enc(x)))), must reproduce its partner; at ratio 1 "
                "it is dm2c-anchor",
))

__all__ = ["AnchorOptions", "AnchorTrainer", "LinkedOptions", "LinkedTrainer", "silhouettes"]
