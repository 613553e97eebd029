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

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

STAGES = ("prep", "embed", "unpair", "train")
TOP_KEYS = ("name", "description", "seed", "out", *STAGES)


@dataclass
class Recipe:
    path: Path
    name: str
    seed: int = 0
    description: str = ""
    out: str | None = None
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def section(self, stage: str) -> dict[str, Any]:
        """The stage's table with the recipe seed filled in where the stage has a seed."""
        return dict(self.sections.get(stage, {}))

    def where(self, stage: str) -> str:
        return f"recipe {self.path} [{stage}]"

    def with_overrides(self, overrides: dict[str, dict[str, Any]]) -> Recipe:
        sections = {k: dict(v) for k, v in self.sections.items()}
        for stage, values in overrides.items():
            sections.setdefault(stage, {}).update(values)
        return Recipe(self.path, self.name, self.seed, self.description, self.out, sections)


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
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"recipe {path}: name = {name!r}: must be a non-empty string without '/'.")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"recipe {path}: seed = {seed!r}: must be a non-negative integer.")
    out = data.get("out")
    if out is not None and not isinstance(out, str):
        raise ConfigError(f"recipe {path}: out = {out!r}: must be a string (a folder).")
    return Recipe(
        path=path.resolve(),
        name=name,
        seed=seed,
        description=str(data.get("description", "")),
        out=out,
        sections={s: dict(data.get(s, {})) for s in STAGES},
    )
