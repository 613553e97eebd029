"""Encoders that give NaN/inf features (fp16 overflow) stop the run with the rows and the fix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_encode import clip_table, run_encode, toy  # noqa: F401  (toy: the module's fixture)

from embed.encoders.text import TextVectorizer
from mixbench.errors import DataError


def test_non_finite_features_name_rows_shard_and_fix(toy: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    real = TextVectorizer.encode

    def overflowing(self: TextVectorizer, values: Any) -> np.ndarray:
        out = np.asarray(real(self, values), dtype=np.float32).copy()
        out[0, 0] = np.inf
        return out

    monkeypatch.setattr(TextVectorizer, "encode", overflowing)
    out = toy["tmp"] / "nonfinite"
    enc = {"image": clip_table(toy["clip"]), "text": {"encoder": "bow"}}
    with pytest.raises(DataError, match=r"non-finite features for 1 row\(s\) of split 'train' shard train-00000.h5 "
                                        r"\(ids txt-0\); under fp16 this is usually overflow: set "
                                        r"\[embed.encoders.text\] precision = 'fp32'"):
        run_encode(toy["src"], out, enc)
    assert not (out / "manifest.json").exists()
