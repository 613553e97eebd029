"""prep: read raw paired datasets, validate them, and write the canonical store.

Stages talk to each other only through the store (:mod:`mixbench.store`: ``Store`` reads one,
``StoreWriter`` writes one). Dataset adapters live in ``prep.adapters``; ``prepare(config, out)`` is
the stage.
"""

from .adapters import adapter_help, config_keys, get_adapter, list_adapters, make_config
from .stage import prepare

__all__ = [
    "adapter_help",
    "config_keys",
    "get_adapter",
    "list_adapters",
    "make_config",
    "prepare",
]
