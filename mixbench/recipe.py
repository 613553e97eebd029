"""Recipes: one TOML file that configures every stage.

```toml
name = "wikipedia"          # output goes to out/<name>/ unless --out is given
seed = 0                    # default seed of every stage that has one
description = "..."

[prep]                      # keys of prep's adapter config (adapter = "wikipedia", root = ...)
[embed]                     # EmbedConfig keys (dim, whiten, ...; [embed.<modality>] encoders)
[unpair]                    # UnpairConfig keys (ratio, mode, strategy, ...)
[train]                     # TrainConfig keys (method, variant, epochs, ...)
```

Relative paths inside a recipe are resolved against the recipe file's folder, so a recipe
runs the same from any working directory.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

STAGES = ("prep", "embed", "unpair", "train")
TOP_KEYS = ("name", "description", "seed", "out", *STAGES)
SCALAR_KEYS = ("name", "description", "seed", "out")


@dataclass
class Recipe:
    path: Path
    name: str
    seed: int = 0
    description: str = ""
    out: str | None = None
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # stage → key → the ``--set`` that changed it (for error messages that name the --set)
    overridden: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def section(self, stage: str) -> dict[str, Any]:
        """The stage's table with the recipe seed filled in where the stage has a seed."""
        return dict(self.sections.get(stage, {}))

    def where(self, stage: str) -> str:
        return f"recipe {self.path} [{stage}]"

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        """The recipe with ``--set`` values applied: ``{stage: {key: value}}`` for stage keys (nested
        tables merge), ``{"seed": 1}`` (also ``name``, ``out``, ``description``) for top-level keys."""
        sections = {k: dict(v) for k, v in self.sections.items()}
        overridden = {k: dict(v) for k, v in self.overridden.items()}
        top: dict[str, Any] = {}
        for key, values in overrides.items():
            if key in SCALAR_KEYS:
                top[key] = values
                continue
            if key not in STAGES or not isinstance(values, dict):
                raise ConfigError(f"--set {key}=...: unknown recipe key '{key}'. Allowed: {', '.join(TOP_KEYS)} "
                                  "(stage keys as stage.key, e.g. train.seed=1).")
            table = sections.setdefault(key, {})
            for k, v in values.items():
                if isinstance(v, dict) and isinstance(table.get(k), dict):
                    table[k] = _merge(table[k], v)
                else:
                    table[k] = v
                overridden.setdefault(key, {})[k] = f"--set {key}.{_flat(k, v)}"
        out = replace(self, sections=sections, overridden=overridden)
        for key, value in top.items():
            out = replace(out, **{key: _check_top(key, value, f"--set {key}={_literal(value)}")})
        return out

    def blame(self, exc: ConfigError, stage: str) -> ConfigError:
        """``exc`` (raised building ``stage``'s config) renamed after the ``--set`` that caused it, if any."""
        msg = str(exc)
        where = self.where(stage)
        for key, origin in self.overridden.get(stage, {}).items():
            rest = msg.removeprefix(where)
            if rest != msg and (rest.startswith(f" {key} ") or rest.startswith(f" {key}.")
                                or f"unknown key '{key}'" in rest):
                return ConfigError(f"{origin}: [{stage}]{rest}")
        return exc


def _literal(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _flat(key: str, value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        return f"{key}.{_flat(k, v)}"
    return f"{key}={_literal(value)}"


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_top(key: str, value: Any, where: str) -> Any:
    """A top-level recipe value (name, seed, out, description), checked; ``where`` names its origin."""
    if key == "name" and (not isinstance(value, str) or not value or "/" in value):
        raise ConfigError(f"{where}: name = {value!r}: must be a non-empty string without '/'.")
    if key == "seed" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ConfigError(f"{where}: seed = {value!r}: must be a non-negative integer.")
    if key == "out" and value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: out = {value!r}: must be a string (a folder).")
    if key == "description":
        return str(value)
    return value


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe {path}: no such file. Recipes shipped with mixbench are in data/recipes/.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe {path}: not valid TOML ({exc}).") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {path}: not UTF-8 text ({exc}).") from None
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"recipe {path}: unknown top-level key '{key}'. Allowed: {', '.join(TOP_KEYS)}.")
    for stage in STAGES:
        if stage in data and not isinstance(data[stage], dict):
            raise ConfigError(f"recipe {path}: '{stage}' must be a table ([{stage}]).")
    name = _check_top("name", data.get("name", path.stem), f"recipe {path}")
    seed = _check_top("seed", data.get("seed", 0), f"recipe {path}")
    out = _check_top("out", data.get("out"), f"recipe {path}")
    return Recipe(
        path=path.resolve(),
        name=name,
        seed=seed,
        description=str(data.get("description", "")),
        out=out,
        sections={s: dict(data.get(s, {})) for s in STAGES},
    )
