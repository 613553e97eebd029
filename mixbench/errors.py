"""Error types. Every message says where (file, row, field), what was found, and the fix."""

from __future__ import annotations

import errno
import os


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


def os_error_message(exc: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """One line for an OSError met while reading or writing: which file, what, and the fix."""
    name = exc.filename or path or ""
    where = f"{name}: " if name else ""
    text = f"{exc.strerror or exc}"
    code = exc.errno
    if code is None and "No space left" in str(exc):
        code = errno.ENOSPC
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"{where}no space left on the device ({text}); free space (or choose another --out) and rerun the "
                "same command: finished shards and checkpoints are kept.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{text}; make the folder writable or choose another --out, then rerun."
    if code == errno.ENOTDIR:
        return f"{where}{text}: a part of the path is a file, not a folder; fix the path."
    if code == errno.ENOENT:
        return f"{where}no such file or folder; check the path."
    return f"{where}{text}; check the path and the disk, then rerun."


class WriteError(StoreError):
    """Writing an output failed (full disk, permissions): the message says which file and the fix."""

    @classmethod
    def from_os(cls, exc: OSError, path: str | os.PathLike[str] | None = None) -> WriteError:
        return cls(os_error_message(exc, path))
