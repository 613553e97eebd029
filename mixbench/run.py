"""``mixbench run RECIPE``: run prep → embed → unpair → train in order.

Each stage writes its own folder under the output root (``out/<name>/{prep,embed,unpair,train}``).
A stage whose output already records the same run key (config hash + input checksums) is
reused, not redone, once its files verify (:func:`mixbench.stagekit.reusable_store`);
``force="embed"`` redoes embed and every stage after it. The output root is locked while the run
goes on (:class:`mixbench.stagekit.OutputLock`): a second run into it refuses at once.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .recipe import STAGES, Recipe, load_recipe
from .stagekit import OutputLock

log = logging.getLogger(__name__)


def stage_configs(recipe: Recipe) -> dict[str, Any]:
    """Build and check every stage config of a recipe before any work starts."""
    import embed
    import prep
    import train
    import unpair

    builders = {
        "prep": prep.make_config,
        "embed": embed.EmbedConfig.from_dict,
        "unpair": unpair.UnpairConfig.from_dict,
        "train": train.TrainConfig.from_dict,
    }
    configs: dict[str, Any] = {}
    for stage in STAGES:
        table = recipe.section(stage)
        if stage == "prep" and "adapter" not in table:
            raise ConfigError(f"{recipe.where('prep')}: 'adapter' is required; choose one of {', '.join(prep.list_adapters())}.")
        try:
            configs[stage] = builders[stage](_with_seed(table, recipe.seed, stage), recipe.where(stage))
        except ConfigError as exc:
            raise recipe.blame(exc, stage) from None
    return configs


def _with_seed(table: dict[str, Any], seed: int, stage: str) -> dict[str, Any]:
    import embed
    import prep
    import train
    import unpair

    classes = {"embed": embed.EmbedConfig, "unpair": unpair.UnpairConfig, "train": train.TrainConfig}
    keys = classes[stage].keys() if stage in classes else prep.config_keys(table.get("adapter", ""))
    if "seed" in keys and "seed" not in table:
        table = {**table, "seed": seed}
    return table


def check_shared_dim(configs: dict[str, Any], prep_dir: Path, where: str) -> None:
    """``[embed] dim = 0`` keeps each modality's own dimension: refuse it right after prep (not at
    train, three stages later) when the train method needs one shared dimension and they differ."""
    from mixbench.store.shards import Store
    from train.registry import get_method

    ecfg, tcfg = configs["embed"], configs["train"]
    if ecfg.dim > 0 or not get_method(tcfg.method).shared_dim:
        return
    store = Store(prep_dir, verify=False)
    if any(m in ecfg.encoders or not store.has_column(m, "feat") for m in store.modalities):
        return  # encoded dims are known only after the encoders run
    dims = {m: store.feat_dim(m) for m in store.modalities}
    if len(set(dims.values())) > 1:
        low = min(dims.values())
        raise ConfigError(
            f"{where} dim = 0 keeps each modality's own feature dimension ({', '.join(f'{m} {d}' for m, d in dims.items())}), "
            f"but [train] method = {tcfg.method!r} needs one shared dimension: set [embed] dim to at most {low} "
            f"(CLI: --set embed.dim={low})."
        )


def recorded_config(stage: str, folder: Path) -> dict[str, Any] | None:
    """The config a stage's complete output records (None: no complete output there)."""
    try:
        if stage == "train":
            if not (folder / "run.json").exists():
                return None
            return dict(json.loads((folder / "metrics.json").read_text()).get("config") or {})
        if not (folder / "manifest.json").exists():
            return None
        lineage = json.loads((folder / "manifest.json").read_text()).get("lineage") or []
        return dict(lineage[-1].get("config") or {}) if lineage else {}
    except (OSError, ValueError, AttributeError):
        return {}  # unreadable: the stage itself reports what is wrong


def _refuse_replacing(stage: str, folder: Path, config: dict[str, Any]) -> None:
    """A complete output of another config at ``folder`` is an error naming the keys that differ.
    One of the same config may be replaced: its input changed (an upstream stage was redone) or it
    failed verification; the stage reuses it when neither."""
    old = recorded_config(stage, folder)
    if old is None:
        return
    differ = [k for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)]
    if not differ:
        return
    shown = ", ".join(f"{k} {old.get(k)!r} → {config.get(k)!r}" for k in differ[:4])
    more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
    hint = (" To keep both runs, give this one its own --out (or run `mixbench train` on the unpair store "
            "into another folder)." if stage == "train" else "")
    raise ConfigError(
        f"{folder}: holds a complete {stage} output of another config ({shown}{more}); `mixbench run` does not "
        f"replace it silently. Pass --overwrite to replace it.{hint}"
    )


def stage_dirs(root: Path) -> dict[str, Path]:
    return {s: root / s for s in STAGES}


def run_recipe(
    recipe: str | Path | Recipe,
    *,
    out: str | Path | None = None,
    force: str | None = None,
    until: str | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run a recipe; returns ``{"out": root, "stages": {stage: summary}, "train": train summary}``.

    ``force``: redo this stage and all after it. ``until``: stop after this stage.
    ``overwrite``: replace a stage's complete output of another config or input (e.g. a run of
    another seed); without it such an output is an error naming what differs, never replaced
    silently. ``force`` implies it for the stages it redoes.
    ``overrides``: ``{stage: {key: value}}`` applied on top of the recipe tables, and top-level keys
    (``{"seed": 1}``: the default seed of every stage).
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if overrides:
        recipe = recipe.with_overrides(overrides)
    for name, value in (("force", force), ("until", until)):
        if value is not None and value not in STAGES:
            raise ConfigError(f"--{name} {value!r}: must be one of {', '.join(STAGES)}.")
    configs = stage_configs(recipe)
    root = Path(out) if out is not None else Path(recipe.out or Path("out") / recipe.name)
    if out is None and recipe.out and not Path(recipe.out).is_absolute():
        root = recipe.base_dir / recipe.out
    with OutputLock(root, "run"):
        return _run_stages(recipe, configs, root, force=force, until=until, overwrite=overwrite)


def _run_stages(recipe: Recipe, configs: dict[str, Any], root: Path, *, force: str | None,
                until: str | None, overwrite: bool = False) -> dict[str, Any]:
    import embed
    import prep
    import train
    import unpair

    dirs = stage_dirs(root)
    forced = STAGES.index(force) if force else len(STAGES)
    last = STAGES.index(until) if until else len(STAGES) - 1
    summary: dict[str, Any] = {"out": str(root), "recipe": str(recipe.path), "stages": {}}
    for i, stage in enumerate(STAGES[: last + 1]):
        if not (overwrite or i >= forced):
            _refuse_replacing(stage, dirs[stage], configs[stage].to_dict())
        kw = {"overwrite": True, "reuse": i < forced}  # another config was refused just above
        t0 = time.perf_counter()
        log.info("stage %s → %s", stage, dirs[stage])
        if stage == "prep":
            result = prep.prepare(configs["prep"], dirs["prep"], base_dir=recipe.base_dir, **kw)
        elif stage == "embed":
            check_shared_dim(configs, dirs["prep"], recipe.where("embed"))
            result = embed.embed(dirs["prep"], dirs["embed"], configs["embed"], base_dir=recipe.base_dir, **kw)
        elif stage == "unpair":
            result = unpair.unpair(dirs["embed"], dirs["unpair"], configs["unpair"], **kw)
        else:
            result = train.train(dirs["unpair"], dirs["train"], configs["train"], **kw)
            summary["train"] = result
        summary["stages"][stage] = {"dir": str(dirs[stage]), "seconds": round(time.perf_counter() - t0, 3),
                                    "reused": bool(result.get("reused", False)) if isinstance(result, dict) else False}
    return summary
