"""Classic text features with scikit-learn: ``tfidf`` and ``bow``.

Both work on ``text`` strings and on tag/BoW vectors (a ``feat`` column of counts, e.g.
NUS-WIDE tags). The vocabulary (strings) and the document frequencies (both inputs) are fitted
on the **train split only**, streaming over its shards; every shard of every split is then
transformed with that fit. The fit is deterministic, done once (by rank 0 under torchrun and
broadcast), and stored with the features (``vocabulary-<modality>.json``).

TF-IDF follows scikit-learn's ``TfidfTransformer`` exactly (``smooth_idf``: idf = ln((1+n)/(1+df)) + 1,
optional sublinear tf, then row normalisation). Tokenisers: ``wordpunct`` (nltk's regex
``wordpunct_tokenize``, needs no nltk data) or ``sklearn`` (the default ``token_pattern``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch

from mixbench.config import option
from mixbench.errors import ConfigError, DataError

from .base import EncoderConfig, ValueEncoder

log = logging.getLogger(__name__)

BLOCK = 2048  # rows transformed at once


@dataclasses.dataclass(frozen=True)
class BowConfig(EncoderConfig):
    """``encoder = "bow"``: term counts over a train-fitted vocabulary (or the tag vectors as they are)."""

    name: ClassVar[str] = "bow"
    inputs: ClassVar[tuple[str, ...]] = ("text", "feat")

    encoder: str = option("bow", "encoder name")
    tokenizer: str = option("wordpunct", "wordpunct (nltk, no data needed) or sklearn (default token_pattern)",
                            choices=("wordpunct", "sklearn"))
    lowercase: bool = option(True, "lowercase before tokenising")
    stop_words: str = option("", "'' or 'english' (scikit-learn's list)", choices=("", "english"))
    max_features: int = option(4096, "keep the most frequent terms (train split); 0 = all", low=0)
    min_df: int = option(1, "ignore terms in fewer train documents", low=1)
    max_df: float = option(1.0, "ignore terms in more than this fraction of train documents", low=0.0, high=1.0, low_open=True)
    ngram_max: int = option(1, "longest n-gram", low=1, high=5)
    binary: bool = option(False, "presence (1) instead of counts")
    norm: str = option("none", "row normalisation: none, l1, l2", choices=("none", "l1", "l2"))


@dataclasses.dataclass(frozen=True)
class TfidfConfig(BowConfig):
    """``encoder = "tfidf"``: BoW counts weighted by train-split inverse document frequency."""

    name: ClassVar[str] = "tfidf"

    encoder: str = option("tfidf", "encoder name")
    norm: str = option("l2", "row normalisation: none, l1, l2", choices=("none", "l1", "l2"))
    sublinear_tf: bool = option(False, "tf → 1 + ln(tf)")
    smooth_idf: bool = option(True, "idf = ln((1+n)/(1+df)) + 1 (else ln(n/df) + 1)")


def wordpunct(text: str) -> list[str]:
    """nltk's ``wordpunct_tokenize`` (a regex; no nltk data needed)."""
    from nltk.tokenize import wordpunct_tokenize

    return wordpunct_tokenize(text)


def idf_from_df(df: np.ndarray, n_docs: int, smooth: bool) -> np.ndarray:
    """scikit-learn's idf: ``ln((1+n)/(1+df)) + 1`` (smooth) or ``ln(n/df) + 1``."""
    df = df.astype(np.float64)
    if smooth:
        return np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    with np.errstate(divide="ignore"):
        return np.log(n_docs / df) + 1.0


class TextVectorizer(ValueEncoder):
    """``bow``/``tfidf`` over strings (``input_kind = "text"``) or count vectors (``"feat"``)."""

    def __init__(self, cfg: BowConfig, device: torch.device, *, input_kind: str = "text", **_: Any) -> None:
        super().__init__(cfg, device)
        self.vc = cfg
        self.input_kind = input_kind
        self.tfidf = isinstance(cfg, TfidfConfig)
        self.vectorizer: Any = None  # sklearn CountVectorizer (strings)
        self.idf: np.ndarray | None = None
        self.n_docs = 0
        self._dim: int | None = None

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        return self.input_kind == "text" or self.tfidf

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise ConfigError(f"{self.vc.encoder}: not fitted yet (fit on the train split first).")
        return self._dim

    def set_input_dim(self, dim: int) -> None:
        """For ``feat`` input: the tag-vector width (the output has the same width)."""
        self._dim = int(dim)

    def _count_vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import CountVectorizer

        kw: dict[str, Any] = {
            "lowercase": self.vc.lowercase,
            "stop_words": self.vc.stop_words or None,
            "max_features": self.vc.max_features or None,
            "min_df": self.vc.min_df,
            "max_df": self.vc.max_df,
            "ngram_range": (1, self.vc.ngram_max),
            "dtype": np.float64,
        }
        if self.vc.tokenizer == "wordpunct":
            kw.update(tokenizer=wordpunct, token_pattern=None)
        return CountVectorizer(**kw)

    def fit(self, values: Iterable[list[str] | np.ndarray]) -> None:
        """Fit on the train split: ``values`` yields one batch (list of strings or count matrix) per shard."""
        if self.input_kind == "text":
            docs = (str(t) for batch in values for t in batch)
            self.vectorizer = self._count_vectorizer()
            try:
                counts = self.vectorizer.fit_transform(docs)
            except ValueError as exc:  # empty vocabulary
                raise DataError(f"{self.vc.encoder}: cannot fit a vocabulary on the train split ({exc}); "
                                "check the text column, or lower min_df / raise max_df.") from None
            self.n_docs = int(counts.shape[0])
            self._dim = int(counts.shape[1])
            if self.tfidf:
                df = np.asarray((counts > 0).sum(axis=0)).ravel()
                self.idf = idf_from_df(df, self.n_docs, self.vc.smooth_idf)  # type: ignore[attr-defined]
        else:
            df_sum: np.ndarray | None = None
            n = 0
            for batch in values:
                arr = np.asarray(batch)
                part = (arr > 0).sum(axis=0)
                df_sum = part if df_sum is None else df_sum + part
                n += int(arr.shape[0])
            if df_sum is None or n == 0:
                raise DataError(f"{self.vc.encoder}: the train split has no tag vectors to fit on.")
            self.n_docs = n
            self._dim = int(df_sum.shape[0])
            self.idf = idf_from_df(df_sum, n, self.vc.smooth_idf)  # type: ignore[attr-defined]
        log.info("%s: fitted on %d train documents, %d features", self.vc.encoder, self.n_docs, self._dim)

    def fitted_state(self) -> Any:
        return {"vectorizer": self.vectorizer, "idf": self.idf, "n_docs": self.n_docs, "dim": self._dim}

    def load_fitted_state(self, state: Any) -> None:
        self.vectorizer, self.idf = state["vectorizer"], state["idf"]
        self.n_docs, self._dim = state["n_docs"], state["dim"]

    def encode(self, values: list[str] | np.ndarray) -> np.ndarray:
        """Transform in blocks of :data:`BLOCK` rows (the dense float64 block stays small)."""
        n = len(values)
        if n <= BLOCK:
            return self._encode_block(values)
        return np.concatenate([self._encode_block(values[a : a + BLOCK]) for a in range(0, n, BLOCK)])

    def _encode_block(self, values: list[str] | np.ndarray) -> np.ndarray:
        if self.input_kind == "text":
            if self.vectorizer is None:
                raise ConfigError(f"{self.vc.encoder}: not fitted yet (fit on the train split first).")
            x = self.vectorizer.transform([str(t) for t in values]).toarray()
        else:
            x = np.asarray(values, dtype=np.float64)
            if x.ndim != 2 or (self._dim is not None and x.shape[1] != self._dim):
                raise DataError(f"{self.vc.encoder}: tag vectors of shape {x.shape}, expected (N, {self._dim}).")
            x = np.maximum(x, 0.0)
        if self.vc.binary:
            x = (x > 0).astype(np.float64)
        if self.tfidf:
            if getattr(self.vc, "sublinear_tf", False):
                x = np.where(x > 0, 1.0 + np.log(np.where(x > 0, x, 1.0)), 0.0)
            assert self.idf is not None
            x = x * self.idf[None, :]
        if self.vc.norm != "none":
            ord_ = 1 if self.vc.norm == "l1" else 2
            nrm = np.linalg.norm(x, ord=ord_, axis=1, keepdims=True)
            x = x / np.where(nrm > 0, nrm, 1.0)
        return x.astype(np.float32)

    def vocabulary(self) -> list[str]:
        if self.vectorizer is None:
            return []
        return [str(t) for t in self.vectorizer.get_feature_names_out()]

    def aux_files(self) -> dict[str, bytes]:
        if not self.needs_fit:
            return {}
        doc = {"encoder": self.vc.encoder, "input": self.input_kind, "n_docs": self.n_docs,
               "vocabulary": self.vocabulary(),
               "idf": [float(v) for v in self.idf] if self.idf is not None else None}
        return {"vocabulary.json": (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")}

    def describe(self) -> dict[str, Any]:
        vocab = self.vocabulary()
        h = hashlib.sha256()
        h.update("\n".join(vocab).encode("utf-8"))
        if self.idf is not None:
            h.update(np.asarray(self.idf, dtype=np.float64).tobytes())
        return {
            "encoder": self.vc.encoder,
            "input": self.input_kind,
            "fitted_on": "train" if self.needs_fit else None,
            "n_docs": self.n_docs,
            "dim": self._dim,
            "vocabulary_size": len(vocab) if vocab else self._dim,
            "fit_sha256": h.hexdigest() if self.needs_fit else None,
            "precision": "fp64 (numpy)",
            "config": self.vc.to_dict(),
        }
