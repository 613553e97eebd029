"""Stage configurations: typed dataclasses whose fields are, with the same spelling, the recipe
keys, the CLI flags, the keyword arguments of the stage function and the keys recorded in a
store's lineage.

Constraints are data (``option(..., choices=..., low=..., high=...)``), checked once when a
config is built, and every failure reads the same way::

    recipe data/recipes/wiki.toml [unpair] ratio = 1.5: must be a number in [0, 1].
    recipe data/recipes/wiki.toml [embed]: unknown key 'dimm'. Allowed keys: dim, whiten, ...
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from .errors import ConfigError


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: typing.Sequence[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A config field with its help text and constraints."""
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
    }
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(arg)}"
    if origin is dict:
        return "a table"
    if isinstance(tp, type) and issubclass(tp, Config):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints are accepted as floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} = {value!r}: must be {_type_name(tp)}.")
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where} = {value!r}: must be {_type_name(tp)}.")
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_t, val_t = typing.get_args(tp) or (str, Any)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r}: must be a table.")
        return {str(k): _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r}: must be a table.")
        return tp.from_dict(value, where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: must be true or false.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} = {value!r}: must be an integer.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} = {value!r}: must be a number.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r}: must be a string.")
    return value


def _check_constraints(value: Any, meta: Mapping[str, Any], where: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    values = value if isinstance(value, list) else [value]
    if choices is not None:
        for v in values:
            if v not in choices:
                allowed = ", ".join(repr(c) for c in choices)
                raise ConfigError(f"{where} = {v!r}: must be one of {allowed}.")
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        bad = (low is not None and (v <= low if meta.get("low_open") else v < low)) or (
            high is not None and (v >= high if meta.get("high_open") else v > high)
        )
        if bad:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            lb = "(" if meta.get("low_open") or low is None else "["
            rb = ")" if meta.get("high_open") or high is None else "]"
            kind = "an integer" if isinstance(v, int) else "a number"
            raise ConfigError(f"{where} = {v!r}: must be {kind} in {lb}{lo}, {hi}{rb}.")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every stage config. Subclasses are frozen dataclasses built with :func:`option`."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        where = self.section or type(self).__name__
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            loc = f"[{where}] {f.name}"
            value = _coerce(getattr(self, f.name), hints[f.name], loc)
            _check_constraints(value, f.metadata, loc)
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override in subclasses and raise :class:`ConfigError`."""

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str | None = None) -> Self:
        """Build from a recipe table; unknown keys and bad values fail with the location."""
        data = dict(data or {})
        where = where or f"[{cls.section}]"
        allowed = cls.keys()
        for key in data:
            if key not in allowed:
                import difflib

                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(
                    f"{where}: unknown key '{key}'.{hint} Allowed keys: {', '.join(allowed)}."
                )
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                loc = f"{where} {f.name}"
                v = _coerce(data[f.name], hints[f.name], loc)
                _check_constraints(v, f.metadata, loc)
                values[f.name] = v
        try:
            return cls(**values)
        except ConfigError as exc:
            msg = str(exc)
            prefix = f"[{cls.section or cls.__name__}]"
            if msg.startswith(prefix):
                msg = msg[len(prefix):].lstrip()
            raise ConfigError(f"{where} {msg}") from None
        except TypeError as exc:  # a required key is missing
            raise ConfigError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def config_hash(self) -> str:
        return hash_json(self.to_dict())

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, skip: typing.Iterable[str] = ()) -> None:
        """Add one ``--key`` flag per scalar field (help and choices from the field)."""
        hints = typing.get_type_hints(cls)
        group = parser.add_argument_group(f"[{cls.section}] options (same names as the recipe keys)")
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            tp = hints[f.name]
            base = _scalar_base(tp)
            if base is None:
                continue
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not dataclasses.MISSING else None
            help_ = f.metadata.get("help", "")
            if default is not None and default is not dataclasses.MISSING:
                help_ = f"{help_} (default: {default})"
            kw: dict[str, Any] = {"dest": f.name, "default": None, "help": help_}
            if base is bool:
                kw["type"] = _parse_bool
                kw["metavar"] = "{true,false}"
            elif base is list:
                kw["type"] = str
                kw["metavar"] = "A,B,..."
            else:
                kw["type"] = base
                if f.metadata.get("choices"):
                    kw["choices"] = f.metadata["choices"]
            group.add_argument(flag, **kw)

    @classmethod
    def describe(cls, *, skip: typing.Iterable[str] = ()) -> list[dict[str, str]]:
        """One row per key: ``key``, ``type``, ``default`` (as TOML would write it), ``help`` with the
        allowed values or range (what ``mixbench list ... -v``, ``--help`` and the README show)."""
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            if f.default is not dataclasses.MISSING:
                default = _toml_literal(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = _toml_literal(f.default_factory())
            else:
                default = "(required)"
            meta = f.metadata
            allowed = ""
            if meta.get("choices"):
                allowed = "one of " + ", ".join(_toml_literal(c) for c in meta["choices"])
            elif meta.get("low") is not None or meta.get("high") is not None:
                lo = "-inf" if meta.get("low") is None else f"{meta['low']:g}"
                hi = "inf" if meta.get("high") is None else f"{meta['high']:g}"
                allowed = f"in {'(' if meta.get('low_open') else '['}{lo}, {hi}{')' if meta.get('high_open') else ']'}"
            help_ = meta.get("help", "") + (f" ({allowed})" if allowed else "")
            rows.append({"key": f.name, "type": _type_name(hints[f.name]), "default": default, "help": help_})
        return rows

    @classmethod
    def options_text(cls, *, skip: typing.Iterable[str] = (), indent: str = "  ") -> str:
        """:meth:`describe` as aligned text lines: ``key = default  help``."""
        rows = cls.describe(skip=skip)
        width = max((len(f"{r['key']} = {r['default']}") for r in rows), default=0)
        return "\n".join(f"{indent}{(r['key'] + ' = ' + r['default']).ljust(width)}  {r['help']}" for r in rows)

    @classmethod
    def cli_overrides(cls, ns: argparse.Namespace) -> dict[str, Any]:
        """The fields given on the command line (``None`` means not given)."""
        hints = typing.get_type_hints(cls)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            v = getattr(ns, f.name, None)
            if v is None:
                continue
            if _scalar_base(hints[f.name]) is list:
                (arg,) = typing.get_args(_strip_none(hints[f.name])) or (str,)
                v = [arg(x) for x in str(v).split(",") if x != ""]
            out[f.name] = v
        return out


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "(none)"
    return str(value)


def _strip_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _scalar_base(tp: Any) -> Any:
    tp = _strip_none(tp)
    if tp in (int, float, str, bool):
        return tp
    if typing.get_origin(tp) is list and typing.get_args(tp)[0] in (int, float, str):
        return list
    return None


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_json(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``: the config hash recorded in lineage."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
