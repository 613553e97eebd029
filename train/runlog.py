"""Per-epoch log of a training run: ``epochs.jsonl`` (one JSON object per epoch, appended and flushed
as the run goes) and ``epochs.csv`` (the same rows, one column per key, rewritten atomically at each
checkpoint and at the end).

Rows of different phases have different keys (pre-training: ``rec``; joint: the loss terms and
the metrics); the CSV has the union of the keys, empty where a row has none.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from mixbench.store.manifest import atomic_write_text

JSONL = "epochs.jsonl"
CSV = "epochs.csv"
LEAD = ("phase", "epoch", "seconds", "steps")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Collects epoch rows; with ``directory`` set, writes them to ``epochs.jsonl`` / ``epochs.csv``."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.rows: list[dict[str, Any]] = []
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def jsonl_path(self) -> Path | None:
        return self.directory / JSONL if self.directory else None

    @property
    def csv_path(self) -> Path | None:
        return self.directory / CSV if self.directory else None

    def append(self, row: dict[str, Any]) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        self.rows.append(row)
        if self.jsonl_path is not None:
            with open(self.jsonl_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Replace the log by ``rows`` (a resumed run: the rows up to its checkpoint)."""
        self.rows = [{k: _clean(v) for k, v in r.items()} for r in rows]
        if self.jsonl_path is not None:
            atomic_write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in self.rows))
            self.write_csv()

    def columns(self) -> list[str]:
        keys: list[str] = [k for k in LEAD if any(k in r for r in self.rows)]
        for r in self.rows:
            for k in r:
                if k not in keys:
                    keys.append(k)
        return keys

    def write_csv(self) -> None:
        if self.csv_path is None:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns(), restval="", lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
        atomic_write_text(self.csv_path, buf.getvalue())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an ``epochs.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
