"""Dataset adapters: name → (config class, reader). ``list_adapters()`` shows them."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from mixbench.errors import ConfigError

from .base import Adapter, AdapterConfig, PairedData, SplitData
from . import wikipedia

_REGISTRY: dict[str, Adapter] = {}


def register(adapter: Adapter) -> None:
    _REGISTRY[adapter.name] = adapter


def _load_builtin() -> None:
    register(wikipedia.ADAPTER)
    # further adapters register themselves here (import inside to keep start-up light)
    for modname in ("uci_mfeat", "paired_features", "raw_pairs", "image_folder", "dcmh", "dm2c_mat"):
        try:
            mod = __import__(f"{__name__}.{modname}", fromlist=["ADAPTERS"])
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{modname}":
                continue
            raise
        for a in getattr(mod, "ADAPTERS", [getattr(mod, "ADAPTER", None)]):
            if a is not None:
                register(a)


def list_adapters() -> list[str]:
    if not _REGISTRY:
        _load_builtin()
    return sorted(_REGISTRY)


def get_adapter(name: str) -> Adapter:
    names = list_adapters()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"[prep] adapter = {name!r}: unknown adapter.{hint} Available: {', '.join(names)}.")
    return _REGISTRY[name]


def make_config(table: Mapping[str, Any], where: str = "[prep]") -> AdapterConfig:
    """Build the adapter's config from a recipe table (dispatching on ``adapter``)."""
    name = table.get("adapter")
    if not name:
        raise ConfigError(f"{where}: 'adapter' is required; available: {', '.join(list_adapters())}.")
    try:
        adapter = get_adapter(str(name))
    except ConfigError as exc:
        raise ConfigError(f"{where} {str(exc).removeprefix('[prep] ')}") from None
    return adapter.config_cls.from_dict(table, where)


def adapter_help(name: str) -> str:
    """An adapter's description and every option (key = default, meaning, allowed values): what
    ``mixbench list adapters -v``, ``mixbench prep --adapter NAME --help`` and the README show."""
    adapter = get_adapter(name)
    doc = inspect.cleandoc(adapter.config_cls.__doc__ or "")
    head = f"{adapter.name}: {adapter.description}" if adapter.description else adapter.name
    lines = [head, "  options ([prep] keys, --set key=value):",
             adapter.config_cls.options_text(skip=("adapter",), indent="    ")]
    if doc and not doc.startswith(adapter.config_cls.__name__ + "("):
        lines += ["", *("  " + x for x in doc.splitlines())]
    return "\n".join(lines)


def config_keys(name: str) -> list[str]:
    try:
        return get_adapter(name).config_cls.keys()
    except ConfigError:
        return AdapterConfig.keys()


__all__ = [
    "Adapter",
    "AdapterConfig",
    "PairedData",
    "SplitData",
    "adapter_help",
    "config_keys",
    "get_adapter",
    "list_adapters",
    "make_config",
    "register",
]
