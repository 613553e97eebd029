"""Error types. Every message says where (file, row, field), what was found, and the fix."""

from __future__ import annotations


class MixbenchError(Exception):
    """Base class: the CLI prints these as one clear message (no traceback) and exits with 2."""


class ConfigError(MixbenchError, ValueError):
    """A recipe, a stage config or a command-line option is invalid."""


class DataError(MixbenchError, ValueError):
    """Input data is invalid: a missing file, a bad row, a NaN, a label out of range..."""


class StoreError(MixbenchError):
    """A store is incomplete, damaged (checksum mismatch) or does not follow the schema."""


def where(file: object = None, row: int | None = None, field: str | None = None) -> str:
    """Format a location prefix such as ``data/x.list:17 [category]``."""
    parts = ""
    if file is not None:
        parts = str(file)
        if row is not None:
            parts += f":{row}"
    elif row is not None:
        parts = f"row {row}"
    if field is not None:
        parts = f"{parts} [{field}]" if parts else f"[{field}]"
    return parts
