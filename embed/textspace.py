"""A text modality for image-only stores: TAC's WordNet-noun text space (Li et al., ICML 2024;
also DXMC's first stage).

``[embed.text_source] source = "wordnet-nouns"`` turns a store with one image modality into a
paired (image, text) store, as TAC's ``text_embedding.py``, ``filter_nouns.py`` and
``retrieve_text.py`` do:

1. **Noun embeddings.** Every noun goes through each prompt template (TAC's 7 by default) and the
   CLIP text tower; the *unnormalised* outputs are averaged over the templates, then normalised.
2. **Semantic centres.** Spherical k-means on the normalised training image embeddings into
   ``K' = round(N / images_per_centre)`` centres (TAC: N/300, e.g. 167 for CIFAR-10's 50,000);
   each centre is the normalised mean of its members.
3. **Noun filtering.** For every noun, a softmax *over the centres* of ``c_k·t / centre_temperature``
   (TAC: 1); the noun goes to its most probable centre with that probability as its confidence;
   each centre keeps its ``top_nouns`` most confident nouns (TAC: 5).
4. **Retrieval.** Each image's text half is ``normalise(Σ_n softmax_n(u·t_n / τ) t_n)`` over the
   filtered nouns, τ = ``retrieval_temperature`` (TAC: 0.005); ``retrieval_top_k > 0`` restricts
   the softmax to the k nearest nouns (TAC: 0, every filtered noun).

Everything runs on the device in batches: nouns in batches of ``noun_batch`` prompts, the
noun-to-centre softmax in noun chunks (it is a softmax over centres, so chunking nouns is exact),
retrieval in image batches of ``image_batch``, shard by shard, so memory beyond the training
embeddings (k-means needs them) and the output does not grow with the number of images.
TAC computes in fp16 on the GPU; this computes in float32.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mixbench.config import Config, option
from mixbench.errors import ConfigError, DataError
from mixbench.store.shards import Column, Store, StoreWriter, base_schema

log = logging.getLogger(__name__)

#: TAC's prompt templates (a subset of CLIP's ImageNet prompt set), ``{}`` the noun.
TAC_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
SOURCES = ("wordnet-nouns",)
TEXTSPACE_DIR = "textspace"
SELECTED_FILE = "textspace.json"


@dataclass(frozen=True)
class TextSourceConfig(Config):
    """``[embed.text_source]``: give an image-only store a text half (TAC's values are the defaults)."""

    section: ClassVar[str] = "embed.text_source"

    source: str = option("wordnet-nouns", "what the text half is made of", choices=SOURCES)
    vocabulary: str = option("", "noun list, one per line (.txt or .txt.gz); '' = the shipped WordNet 3.0 nouns "
                                 "(data/wordnet/nouns.txt.gz, 146,347 rows as TAC's WordNetNouns.csv)")
    wordnet_dir: str = option("", "read the nouns from this WordNet dict folder through nltk instead of a list")
    encoder: dict[str, Any] = option({}, "the text tower: an open_clip encoder table; {} = the image modality's "
                                         "encoder table (the same CLIP model)")
    templates: list[str] = option(list(TAC_TEMPLATES), "prompt templates, '{}' is the noun; the unnormalised "
                                                       "embeddings are averaged over them (TAC's 7)")
    images_per_centre: int = option(300, "semantic centres K' = round(training images / this) (TAC: 300)", low=1)
    centres: int = option(0, "number of semantic centres; 0 = round(N / images_per_centre), at least 1", low=0)
    top_nouns: int = option(5, "nouns kept per centre, by their softmax-over-centres confidence (TAC: 5)", low=1)
    centre_temperature: float = option(1.0, "temperature of the noun → centre softmax (TAC: 1)", low=0.0,
                                       low_open=True)
    retrieval_temperature: float = option(0.005, "temperature τ of the image → noun softmax (TAC: 0.005)", low=0.0,
                                          low_open=True)
    retrieval_top_k: int = option(0, "softmax over the k nearest filtered nouns only; 0 = all of them (TAC)", low=0)
    kmeans_iters: int = option(300, "spherical k-means iterations (TAC: faiss niter 300; stops early when no "
                                    "assignment changes)", low=1)
    kmeans_restarts: int = option(10, "spherical k-means restarts, the best objective kept (TAC: nredo 10)", low=1)
    kmeans_max_points_per_centre: int = option(256, "k-means trains on a random sample of centres × this many "
                                                    "images when there are more (faiss's default, so TAC's); 0 = all",
                                               low=0)
    fit_split: str = option("train", "split whose images the centres are fitted on")
    image_modality: str = option("image", "the store's image modality (must have features after the encoders)")
    text_modality: str = option("text", "name of the text modality written")
    noun_batch: int = option(2048, "prompts per text-tower forward pass", low=1)
    image_batch: int = option(8192, "images per retrieval batch", low=1)

    def validate(self) -> None:
        for t in self.templates:
            if t.count("{}") != 1:
                raise ConfigError(f"[embed.text_source] templates: {t!r} must hold '{{}}' exactly once (the noun).")
        if not self.templates:
            raise ConfigError("[embed.text_source] templates = []: give at least one, e.g. ['a photo of a {}.'].")
        if self.image_modality == self.text_modality:
            raise ConfigError("[embed.text_source] image_modality and text_modality must differ.")
        if self.vocabulary and self.wordnet_dir:
            raise ConfigError("[embed.text_source]: give vocabulary or wordnet_dir, not both.")


# -- the maths (tensors on one device) -----------------------------------------------------------
def spherical_kmeans(x: torch.Tensor, k: int, *, iters: int = 300, restarts: int = 10, seed: int = 0,
                     max_points_per_centre: int = 256, chunk: int = 65536,
                     return_centres: bool = False) -> Any:
    """Labels (N,) of spherical k-means on the rows of ``x`` (as faiss's ``Kmeans(spherical=True)``,
    which TAC uses): assign each row to the centre of highest inner product, centre = normalised
    mean of its rows; initial centres are ``k`` distinct rows drawn at random; an emptied centre
    takes the row farthest from its own centre; the restart with the highest Σ max inner product
    is kept. Like faiss, it trains on a random sample of ``k · max_points_per_centre`` rows when
    there are more (0: all rows), then assigns every row. ``return_centres``: also the (k, D)
    centres."""
    n = x.shape[0]
    if k > n:
        raise DataError(f"spherical k-means: {k} centres but only {n} rows; use fewer centres.")
    gen = torch.Generator().manual_seed(int(seed))
    fit = x
    if max_points_per_centre and n > k * max_points_per_centre:
        fit = x[torch.randperm(n, generator=gen)[: k * max_points_per_centre].to(x.device)]
    m = fit.shape[0]
    best: tuple[float, torch.Tensor] | None = None
    for _ in range(restarts):
        centres = fit[torch.randperm(m, generator=gen)[:k].to(x.device)].clone()
        labels = torch.full((m,), -1, dtype=torch.long, device=x.device)
        for _ in range(iters):
            new, score = _assign(fit, centres, chunk)
            changed = bool((new != labels).any())
            labels = new
            counts = torch.bincount(labels, minlength=k)
            sums = torch.zeros_like(centres).index_add_(0, labels, fit)
            empty = torch.nonzero(counts == 0).flatten()
            if len(empty):  # reseed from the rows least similar to their centre
                far = torch.argsort(score)[: len(empty)]
                sums[empty] = fit[far]
                changed = True
            centres = F.normalize(sums, dim=1)
            if not changed:
                break
        obj = float(_assign(fit, centres, chunk)[1].double().sum())
        if best is None or obj > best[0]:
            best = (obj, centres)
    assert best is not None
    labels = _assign(x, best[1], chunk)[0]
    return (labels, best[1]) if return_centres else labels


def _assign(x: torch.Tensor, centres: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels, scores = [], []
    for a in range(0, x.shape[0], chunk):
        s = x[a : a + chunk] @ centres.T
        v, i = s.max(dim=1)
        labels.append(i)
        scores.append(v)
    return torch.cat(labels), torch.cat(scores)


def centre_means(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(k, D): the normalised mean of each cluster's rows (TAC's image semantic centres)."""
    sums = torch.zeros((k, x.shape[1]), dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    return F.normalize(sums, dim=1)


def filter_nouns(centres: torch.Tensor, nouns: torch.Tensor, *, top_nouns: int = 5, temperature: float = 1.0,
                 chunk: int = 65536) -> torch.Tensor:
    """Indices (ascending) of the nouns TAC keeps: each noun's softmax over the centres of
    ``c_k·t / temperature``; the noun goes to its argmax centre with that probability as its
    confidence; each centre keeps its ``top_nouns`` most confident nouns."""
    k, v = centres.shape[0], nouns.shape[0]
    assign = torch.empty(v, dtype=torch.long, device=nouns.device)
    conf = torch.empty(v, dtype=centres.dtype, device=nouns.device)
    for a in range(0, v, chunk):
        p = torch.softmax(centres @ nouns[a : a + chunk].T / temperature, dim=0)
        conf[a : a + chunk], assign[a : a + chunk] = p.max(dim=0)
    # rank inside each centre: sort by (centre, -confidence), then the position within the centre
    order = torch.argsort(conf, descending=True, stable=True)
    order = order[torch.argsort(assign[order], stable=True)]
    counts = torch.bincount(assign, minlength=k)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(v, device=nouns.device) - starts[assign[order]]
    keep = order[rank < top_nouns]
    return torch.sort(keep).values


def retrieve(images: torch.Tensor, nouns: torch.Tensor, *, temperature: float = 0.005, top_k: int = 0,
             batch: int = 8192) -> torch.Tensor:
    """(N, D) text halves: ``normalise(softmax(u·T / τ) T)`` per image row (``top_k > 0``: over the
    k nearest nouns only). ``images`` and ``nouns`` are unit rows on one device."""
    out = torch.empty((images.shape[0], nouns.shape[1]), dtype=nouns.dtype, device=images.device)
    for a in range(0, images.shape[0], batch):
        s = images[a : a + batch] @ nouns.T / temperature
        if 0 < top_k < nouns.shape[0]:
            vals, idx = s.topk(top_k, dim=1)
            w = torch.softmax(vals, dim=1)
            emb = torch.einsum("bk,bkd->bd", w, nouns[idx])
        else:
            emb = torch.softmax(s, dim=1) @ nouns
        out[a : a + batch] = F.normalize(emb, dim=1)
    return out


def embed_nouns(encode: Callable[[list[str]], torch.Tensor], nouns: Sequence[str], templates: Sequence[str],
                *, batch: int = 2048, progress: bool = True) -> torch.Tensor:
    """(V, D) unit rows: the mean over ``templates`` of ``encode(prompts)`` (unnormalised text-tower
    outputs), normalised. ``encode`` maps a list of strings to a (B, D) tensor on the device."""
    total: torch.Tensor | None = None
    steps = [(t, a) for t in templates for a in range(0, len(nouns), batch)]
    for t, a in tqdm(steps, desc="noun embeddings", unit="batch", disable=not progress or len(steps) < 4):
        emb = encode([t.format(w) for w in nouns[a : a + batch]]).float()
        if total is None:
            total = torch.zeros((len(nouns), emb.shape[1]), dtype=torch.float32, device=emb.device)
        total[a : a + batch] += emb
    assert total is not None
    return F.normalize(total / len(templates), dim=1)


# -- the store step ------------------------------------------------------------------------------
def number_of_centres(cfg: TextSourceConfig, n_images: int) -> int:
    return cfg.centres or max(1, int(np.floor(n_images / cfg.images_per_centre + 0.5)))


def check_store(cfg: TextSourceConfig, store: Store, *, encoded: bool) -> None:
    """Bad input before any work: the store already has the text modality, or lacks the image one."""
    where = f"[embed.text_source] (input store {store.path})"
    if cfg.text_modality in store.modalities:
        raise ConfigError(
            f"{where}: the store already has a '{cfg.text_modality}' modality; a text source is for image-only "
            f"stores. Remove [embed.text_source] to embed the store's own text, or set text_modality to another name."
        )
    if cfg.image_modality not in store.modalities:
        raise ConfigError(f"{where} image_modality = {cfg.image_modality!r}: the store has no such modality; its "
                          f"modalities are {', '.join(store.modalities)}.")
    if not encoded and not store.has_column(cfg.image_modality, "feat"):
        raise ConfigError(f"{where}: modality '{cfg.image_modality}' has no features; add [embed.encoders."
                          f"{cfg.image_modality}] encoder = \"open_clip\" (the same CLIP model gives the text tower).")
    if cfg.fit_split not in store.splits:
        raise ConfigError(f"{where} fit_split = {cfg.fit_split!r}: the store has no such split; its splits are "
                          f"{', '.join(store.splits)}.")


def text_encoder_table(cfg: TextSourceConfig, encoders: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    table = dict(cfg.encoder) if cfg.encoder else dict(encoders.get(cfg.image_modality, {}))
    if table.get("encoder") != "open_clip":
        raise ConfigError(
            "[embed.text_source] encoder: the nouns need a CLIP text tower; give encoder = {encoder = \"open_clip\", "
            "model = ..., pretrained = ...} (the model the image features came from), or encode the images with "
            "open_clip in [embed.encoders.image] so its table is used."
        )
    return table


def load_vocabulary(cfg: TextSourceConfig, base_dir: Path) -> tuple[list[str], dict[str, Any]]:
    from . import wordnet

    if cfg.wordnet_dir:
        words = wordnet.load_nouns(_resolve(cfg.wordnet_dir, base_dir))
        return words, {"wordnet_dir": str(_resolve(cfg.wordnet_dir, base_dir))}
    path = _resolve(cfg.vocabulary, base_dir) if cfg.vocabulary else wordnet.SHIPPED
    words = wordnet.read_list(path)
    return words, {"file": str(path)}


def _resolve(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base_dir / p


def build_text_space(
    store: Store,
    out: str | os.PathLike[str],
    cfg: TextSourceConfig,
    *,
    encoders: Mapping[str, Mapping[str, Any]],
    device: torch.device,
    base_dir: Path,
    lineage: list[dict[str, Any]],
    run_key: str,
    seed: int = 0,
) -> Store:
    """Write ``out``: a paired store with the image modality (unit features) and the retrieved text
    half. Returns it."""
    from .encoders import create_encoder

    check_store(cfg, store, encoded=False)
    img = cfg.image_modality
    x = F.normalize(store.load(cfg.fit_split, img, ["feat"], device=device)["feat"].float(), dim=1)
    n = int(x.shape[0])
    k = number_of_centres(cfg, n)
    if k > n:
        raise ConfigError(f"[embed.text_source] centres = {k}: more semantic centres than the {n} '{cfg.fit_split}' "
                          f"images; set centres <= {n} (or 0: round(N / images_per_centre)).")
    nouns, vocab_info = load_vocabulary(cfg, base_dir)
    table = {**text_encoder_table(cfg, encoders), "normalize": False, "batch_size": cfg.noun_batch}
    tower = create_encoder(table, device, input_kind="text", base_dir=base_dir, where="[embed.text_source] encoder")

    def encode(texts: list[str]) -> torch.Tensor:
        return tower.encode_tensor(texts)  # type: ignore[attr-defined]  # stays on the device

    log.info("text space: %d nouns × %d templates through the text tower", len(nouns), len(cfg.templates))
    t = embed_nouns(encode, nouns, cfg.templates, batch=cfg.noun_batch)
    if t.shape[1] != x.shape[1]:
        raise ConfigError(f"[embed.text_source] encoder: the text tower gives {t.shape[1]}-d embeddings but the "
                          f"'{img}' features are {x.shape[1]}-d; use the CLIP model the images were encoded with.")
    labels = spherical_kmeans(x, k, iters=cfg.kmeans_iters, restarts=cfg.kmeans_restarts, seed=seed,
                              max_points_per_centre=cfg.kmeans_max_points_per_centre)
    centres = centre_means(x, labels, k)
    del x
    keep = filter_nouns(centres, t, top_nouns=cfg.top_nouns, temperature=cfg.centre_temperature)
    if len(keep) == 0:
        raise DataError(f"[embed.text_source]: the filtered vocabulary is empty ({len(nouns)} nouns, {k} centres); "
                        "check the vocabulary file.")
    nouns_f = t[keep].contiguous()
    del t
    log.info("text space: %d centres over %d '%s' images; %d nouns kept", k, n, cfg.fit_split, len(keep))

    schema = {img: {**{c: col for c, col in store.schema[img].items() if c not in ("path", "pixels")},
                    "feat": Column("float32", (int(nouns_f.shape[1]),))},
              cfg.text_modality: {**base_schema(n_labels=len(store.classes) if store.multilabel else None),
                                  "feat": Column("float32", (int(nouns_f.shape[1]),))}}
    writer = StoreWriter(out, kind="paired", dataset=store.dataset, classes=store.classes, schema=schema,
                         lineage=lineage, run_key=run_key, multilabel=store.multilabel, overwrite=True)
    records = [rec for split in store.splits for rec in store.shards(split)]
    for rec in tqdm(records, desc="text space", unit="shard", disable=len(records) < 4):
        if writer.shard_done(rec["split"], rec["index"]):
            continue
        tab = store.read_shard(rec, [img], [c for c in schema[img]])[img]
        u = F.normalize(torch.from_numpy(np.ascontiguousarray(tab["feat"])).to(device).float(), dim=1)
        v = retrieve(u, nouns_f, temperature=cfg.retrieval_temperature, top_k=cfg.retrieval_top_k,
                     batch=cfg.image_batch)
        image_tab = {**tab, "feat": u.cpu().numpy()}
        text_tab = {"id": tab["id"], "label": tab["label"], "pair": tab["pair"], "feat": v.cpu().numpy()}
        writer.write_shard(rec["split"], rec["index"], {img: image_tab, cfg.text_modality: text_tab})
    selected = {"nouns": [nouns[i] for i in keep.tolist()], "index": keep.tolist(), "centres": k,
                "centre_sizes": torch.bincount(labels, minlength=k).tolist()}
    writer.add_file(SELECTED_FILE, json.dumps(selected, indent=1).encode(), role="text-space")
    info = {"text_source": {**cfg.to_dict(), "vocabulary_rows": len(nouns), "vocabulary": vocab_info,
                            "centres": k, "fit_rows": n, "nouns_kept": int(len(keep)),
                            "text_encoder": tower.describe(), "file": SELECTED_FILE},
            "upstream": store.info}
    for key_ in ("rejects", "accounting"):
        if key_ in store.info:
            info[key_] = _paired_accounting(store.info[key_], img, cfg.text_modality) if key_ == "accounting" \
                else store.info[key_]
    writer.finish(info)
    return Store(out)


def _paired_accounting(acc: Mapping[str, Any], img: str, txt: str) -> dict[str, Any]:
    """The image accounting, and the text half's: one retrieved text per kept image."""
    out: dict[str, Any] = {}
    for split, row in acc.items():
        out[split] = dict(row)
        if img in row:
            kept = int(row[img]["kept"])
            out[split][txt] = {"input": kept, "kept": kept, "rejected": 0}
    return out
