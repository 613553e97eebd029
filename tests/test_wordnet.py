"""WordNet noun vocabulary: nltk reader on a hand-built WordNet-format folder, the shipped list,
and (when WordNet 3.0 is installed) a rebuild compared with the shipped list."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from embed import wordnet
from mixbench.errors import DataError

HEADER = "  1 This is a hand-built WordNet-format fixture for tests.  \n"
SYNSETS = [  # (lex_filenum, lemmas, gloss)
    (3, ["entity"], "that which is perceived to have its own distinct existence"),
    (5, ["dog", "domestic_dog", "Canis_familiaris"], "a member of the genus Canis"),
    (6, ["car", "auto"], "a motor vehicle with four wheels"),
    (5, ["dog"], "a dull unattractive unpleasant girl or woman"),
]


def _data_noun(synsets: list[tuple[int, list[str], str]]) -> tuple[str, list[int]]:
    text, offsets = HEADER, []
    for lex, lemmas, gloss in synsets:
        offset = len(text.encode("utf-8"))
        words = " ".join(f"{w} 0" for w in lemmas)
        text += f"{offset:08d} {lex:02d} n {len(lemmas):02x} {words} 000 | {gloss}  \n"
        offsets.append(offset)
    return text, offsets


def make_wordnet(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text, offsets = _data_noun(SYNSETS)
    (root / "data.noun").write_text(text)
    index: dict[str, list[int]] = {}
    for (_, lemmas, _), off in zip(SYNSETS, offsets, strict=True):
        for w in lemmas:
            index.setdefault(w.lower(), []).append(off)
    lines = [f"{w} n {len(o)} 0 {len(o)} 0 {' '.join(f'{x:08d}' for x in o)}  \n" for w, o in sorted(index.items())]
    (root / "index.noun").write_text(HEADER + "".join(lines))
    for pos in ("verb", "adj", "adv"):
        (root / f"data.{pos}").write_text(HEADER)
        (root / f"index.{pos}").write_text(HEADER)
    for pos in ("noun", "verb", "adj", "adv"):
        (root / f"{pos}.exc").write_text("")
    return root


def test_nltk_reader_on_fixture(tmp_path: Path) -> None:
    d = make_wordnet(tmp_path / "wn")
    words = wordnet.load_nouns(d)
    assert words == ["entity", "dog", "domestic dog", "Canis familiaris", "car", "auto", "dog"]
    # an nltk_data layout is found too
    make_wordnet(tmp_path / "nltk_data" / "corpora" / "wordnet")
    assert wordnet.load_nouns(tmp_path / "nltk_data") == words


def test_script_writes_list_deterministically(tmp_path: Path) -> None:
    d = make_wordnet(tmp_path / "wn")
    out = tmp_path / "nouns.txt.gz"
    assert wordnet.main(["--wordnet-dir", str(d), "--out", str(out)]) == 0
    first = out.read_bytes()
    assert wordnet.main(["--wordnet-dir", str(d), "--out", str(out)]) == 0
    assert out.read_bytes() == first  # fixed gzip mtime: byte-identical rebuilds
    assert wordnet.read_list(out) == wordnet.load_nouns(d)


def test_missing_wordnet_is_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DataError) as err:
        wordnet.load_nouns(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install wordnet-base" in msg and "data.noun" in msg
    assert wordnet.main(["--wordnet-dir", str(tmp_path), "--out", str(tmp_path / "x.gz")]) == 2
    with pytest.raises(DataError, match="rebuild it"):
        wordnet.read_list(tmp_path / "none.txt.gz")


def test_shipped_list() -> None:
    words = wordnet.read_list()
    assert len(words) == 146_347 and len(set(words)) == 119_034  # TAC's WordNetNouns.csv has 146,347 rows
    assert words[:3] == ["entity", "physical entity", "abstraction"]
    assert (wordnet.SHIPPED.parent / "LICENSE").read_text().count("WordNet 3.0 Copyright 2006 by Princeton") == 1


@pytest.mark.skipif(not (Path("/usr/share/wordnet") / "data.noun").is_file(),
                    reason="WordNet 3.0 not installed (apt-get install wordnet-base)")
def test_rebuild_matches_shipped(tmp_path: Path) -> None:
    out = tmp_path / "nouns.txt.gz"
    assert wordnet.main(["--wordnet-dir", "/usr/share/wordnet", "--out", str(out)]) == 0
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(wordnet.SHIPPED.read_bytes())
