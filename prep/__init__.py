"""prep: read raw paired datasets, validate them, and write the canonical store.

The store (``prep.store``) is the only way stages talk to each other: ``Store`` reads one,
``StoreWriter`` writes one. Dataset adapters live in ``prep.adapters``;
``prepare(config, out)`` is the stage.
"""

from .adapters import config_keys, get_adapter, list_adapters, make_config
from .stage import prepare
from .store import Column, Store, StoreWriter, base_schema, feature_schema

__all__ = [
    "Column",
    "Store",
    "StoreWriter",
    "base_schema",
    "config_keys",
    "feature_schema",
    "get_adapter",
    "list_adapters",
    "make_config",
    "prepare",
]
