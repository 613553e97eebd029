"""WordNet 3.0 noun vocabulary: the words TAC/DXMC embed with CLIP's text tower.

TAC and DXMC ship ``WordNetNouns.csv``: every noun lemma of every WordNet 3.0 noun synset, one row
per (lemma, synset), 146,347 rows, duplicates kept (a word with five senses appears five times).
mixbench ships the same list derived from WordNet 3.0, compressed, in
``data/wordnet/nouns.txt.gz`` (one word per line, WordNet's own order: noun synsets in
``data.noun`` order, each synset's lemmas in order, ``_`` read as a space) with WordNet's licence
notice, so nothing is downloaded at run time. This module is also the script that rebuilds it,
through nltk's WordNet reader, from a WordNet dict folder (Debian's ``wordnet-base`` installs one at
``/usr/share/wordnet``; an ``nltk_data/corpora/wordnet`` folder works too)::

    python -m embed.wordnet --wordnet-dir /usr/share/wordnet --out data/wordnet/nouns.txt.gz

nltk's reader needs a ``lexnames`` file, which Debian's package does not install; it is written
(the 45 fixed WordNet 3.0 lexicographer file names) beside a private copy of the folder.
The reader's map to other WordNet versions (which reads ``index.sense``) is not used. nltk only
reads inside its data path, so the folder is copied into a temporary ``corpora/wordnet``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mixbench.errors import DataError

log = logging.getLogger(__name__)

#: The shipped list, relative to the repository root (also found next to the installed package).
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "wordnet" / "nouns.txt.gz"
#: WordNet 3.0's lexicographer files, in their fixed numeric order (lexnames(5WN)).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity "
    "noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
#: Files nltk's reader opens when it starts (every part of speech's data, index and exceptions).
NEEDED = tuple(f"{kind}.{pos}" for pos in ("noun", "verb", "adj", "adv") for kind in ("data", "index")) + tuple(
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
FIX = ("install WordNet 3.0 (Debian/Ubuntu: `apt-get install wordnet-base`, files in /usr/share/wordnet) and "
       "pass its dict folder with --wordnet-dir, or use the shipped list (data/wordnet/nouns.txt.gz)")


def lexnames_text() -> str:
    """The ``lexnames`` file nltk's reader needs (``NN<TAB>name<TAB>pos``)."""
    return "".join(f"{i:02d}\t{name}\t{_POS[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def find_wordnet_dir(path: str | os.PathLike[str]) -> Path:
    """The dict folder holding ``data.noun`` under ``path`` (itself, ``dict/``, ``corpora/wordnet/``),
    or a one-line DataError naming the fix."""
    root = Path(path).expanduser()
    for cand in (root, root / "dict", root / "wordnet", root / "corpora" / "wordnet"):
        if all((cand / f).is_file() for f in NEEDED):
            return cand
    missing = [f for f in NEEDED if not (root / f).is_file()]
    raise DataError(f"{root}: no WordNet dict folder here (missing {', '.join(missing)}); {FIX}.")


def load_nouns(wordnet_dir: str | os.PathLike[str]) -> list[str]:
    """Every noun lemma of every noun synset through nltk's WordNet reader (TAC's row set: one row
    per lemma and sense, WordNet's order, ``_`` → space)."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    src = find_wordnet_dir(wordnet_dir)

    class _Reader(WordNetCorpusReader):  # type: ignore[misc]
        def map_wn(self, version: str = "wordnet") -> None:  # noqa: ARG002 - no cross-version map needed
            return None

    import warnings

    import nltk

    with tempfile.TemporaryDirectory(prefix="mixbench-wordnet-") as tmp:
        # nltk >= 3.9 only reads inside its data path, and rejects links that leave it: copy.
        dst = Path(tmp) / "corpora" / "wordnet"
        dst.mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file() and f.name != "lexnames":
                shutil.copyfile(f, dst / f.name)
        lex = src / "lexnames"
        (dst / "lexnames").write_text(lex.read_text() if lex.is_file() else lexnames_text())
        nltk.data.path.insert(0, tmp)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
                reader = _Reader(str(dst), None)
                words = [name.replace("_", " ") for syn in reader.all_synsets("n") for name in syn.lemma_names()]
        finally:
            nltk.data.path.remove(tmp)
    if not words:
        raise DataError(f"{src}/data.noun: no noun synsets read; {FIX}.")
    return words


def write_list(words: Sequence[str], out: str | os.PathLike[str]) -> str:
    """Write ``words`` one a line, gzip with a fixed mtime (byte-identical rebuilds); return the
    sha256 of the uncompressed text."""
    text = "".join(f"{w}\n" for w in words).encode("utf-8")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text)
    os.replace(tmp, out)
    return hashlib.sha256(text).hexdigest()


def read_list(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The noun list (default: the shipped one); a missing file is a one-line DataError."""
    p = Path(path) if path else SHIPPED
    if not p.is_file():
        raise DataError(f"{p}: noun list not found; rebuild it with `python -m embed.wordnet --wordnet-dir DIR "
                        f"--out {p}` ({FIX}).")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        words = [line.rstrip("\n") for line in fh if line.strip()]
    if not words:
        raise DataError(f"{p}: the noun list is empty; rebuild it with `python -m embed.wordnet`.")
    return words


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m embed.wordnet", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wordnet-dir", default=os.environ.get("WORDNET_DIR", "/usr/share/wordnet"),
                    help="WordNet 3.0 dict folder (data.noun, index.noun, ...), or an nltk_data folder "
                         "(default: $WORDNET_DIR or /usr/share/wordnet)")
    ap.add_argument("--out", default=str(SHIPPED), help="output list (.txt or .txt.gz); default: the shipped list")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mixbench.errors import MixbenchError

    try:
        words = load_nouns(args.wordnet_dir)
    except MixbenchError as exc:
        log.error("%s", exc)
        return 2
    digest = write_list(words, args.out)
    log.info("wrote %s: %d nouns (%d distinct), sha256 of the text %s", args.out, len(words), len(set(words)), digest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
