"""The config system: recipe keys ↔ typed fields, constraints, errors that name the key."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from mixbench.config import Config, hash_json, option
from mixbench.errors import ConfigError
from mixbench.recipe import load_recipe


@dataclass(frozen=True)
class Demo(Config):
    section = "demo"
    ratio: float = option(1.0, "fraction", low=0.0, high=1.0)
    mode: str = option("drop", "mode", choices=("drop", "zero"))
    epochs: int = option(3, "epochs", low=1)
    names: list[str] = option(["a", "b"], "names")
    flag: bool = option(False, "a switch")


def test_defaults_and_round_trip() -> None:
    cfg = Demo.from_dict({"ratio": 1, "names": ["x"]})
    assert cfg.ratio == 1.0 and isinstance(cfg.ratio, float)
    assert cfg.to_dict() == {"ratio": 1.0, "mode": "drop", "epochs": 3, "names": ["x"], "flag": False}
    assert Demo.from_dict(cfg.to_dict()) == cfg
    assert cfg.config_hash() == hash_json(cfg.to_dict())
    assert cfg.replace(epochs=5).config_hash() != cfg.config_hash()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"ratio": 1.5}, r"\[demo\] ratio = 1.5: must be a number in \[0, 1\]"),
        ({"mode": "keep"}, r"mode = 'keep': must be one of 'drop', 'zero'"),
        ({"epochs": 0}, r"epochs = 0: must be an integer in \[1, inf\)"),
        ({"epochs": 2.5}, r"epochs = 2.5: must be an integer"),
        ({"flag": "yes"}, r"flag = 'yes': must be true or false"),
        ({"names": "x"}, r"names = 'x': must be a list of a string"),
        ({"ratoi": 0.5}, r"unknown key 'ratoi'. Did you mean 'ratio'\? Allowed keys: ratio, mode, epochs, names, flag"),
    ],
)
def test_bad_values_name_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Demo.from_dict(table, where="[demo]")


def test_cli_flags_mirror_fields() -> None:
    parser = argparse.ArgumentParser()
    Demo.add_arguments(parser)
    ns = parser.parse_args(["--ratio", "0.25", "--names", "p,q", "--flag", "true"])
    assert Demo.cli_overrides(ns) == {"ratio": 0.25, "names": ["p", "q"], "flag": True}
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "nope"])


def test_recipe_unknown_keys(tmp_path) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text('name = "x"\nsed = 1\n')
    with pytest.raises(ConfigError, match="unknown top-level key 'sed'"):
        load_recipe(bad)
    bad.write_text('name = "x"\n[unpair]\nratio = 1.5\n')
    from mixbench.run import stage_configs

    bad.write_text('name = "x"\n[prep]\nadapter = "wikipedia"\n[unpair]\nratio = 1.5\n')
    with pytest.raises(ConfigError, match=r"\[unpair\] ratio = 1.5: must be a number in \[0, 1\]"):
        stage_configs(load_recipe(bad))
    bad.write_text('name = "x"\n[prep]\nadapter = "wikipedia"\nrooot = "."\n')
    with pytest.raises(ConfigError, match=r"\[prep\]: unknown key 'rooot'. Did you mean 'root'\?"):
        stage_configs(load_recipe(bad))
    bad.write_text("name = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)


def test_shipped_recipes_are_valid(repo_root) -> None:
    from mixbench.run import stage_configs

    recipes = sorted((repo_root / "data" / "recipes").glob("*.toml"))
    assert {p.stem for p in recipes} >= {"wikipedia", "uci-mfeat"}
    for path in recipes:
        configs = stage_configs(load_recipe(path))
        assert set(configs) == {"prep", "embed", "unpair", "train"}


def test_set_top_level_seed_and_errors_name_the_set(repo_root) -> None:
    """`--set seed=1` (the recipe's top-level seed) is accepted and seeds every stage that has a seed;
    an error caused by a --set value names the --set, not the recipe file."""
    from mixbench.cli import _parse_set
    from mixbench.run import stage_configs

    recipe = load_recipe(repo_root / "data" / "recipes" / "wikipedia.toml")
    over = _parse_set(["seed=1"], staged=True)
    assert over == {"seed": 1}
    configs = stage_configs(recipe.with_overrides(over))
    assert configs["train"].seed == 1 and configs["unpair"].seed == 1
    configs = stage_configs(recipe.with_overrides(_parse_set(["seed=1", "train.seed=4"], staged=True)))
    assert configs["train"].seed == 4 and configs["unpair"].seed == 1
    with pytest.raises(ConfigError, match=r"^--set seed=-1: seed = -1: must be a non-negative integer"):
        recipe.with_overrides(_parse_set(["seed=-1"], staged=True))
    for item, message in (
        ("train.epochs=-1", r"^--set train\.epochs=-1: \[train\] epochs = -1: must be"),
        ("unpair.ratioo=0.5", r"^--set unpair\.ratioo=0\.5: \[unpair\]: unknown key 'ratioo'\. Did you mean 'ratio'"),
        ("embed.dim=\"x\"", r"^--set embed\.dim=\"x\": \[embed\] dim"),
    ):
        with pytest.raises(ConfigError, match=message) as exc:
            stage_configs(recipe.with_overrides(_parse_set([item], staged=True)))
        assert "wikipedia.toml" not in str(exc.value)
    with pytest.raises(ConfigError, match="top-level recipe key"):
        _parse_set(["sed=1"], staged=True)


def test_stage_cli_set_errors_name_the_set(tmp_path, capsys) -> None:
    from mixbench.cli import main

    assert main(["train", str(tmp_path / "in"), str(tmp_path / "out"), "--set", "epochs=-1"]) == 2
    assert capsys.readouterr().err.startswith("error: --set epochs=-1: [train] epochs = -1")
    assert main(["prep", "--adapter", "uci-mfeat", "--set", "test_fraction=2", "--out", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.startswith("error: --set test_fraction=2: [prep] test_fraction = 2")


def test_every_adapter_option_is_shown(repo_root, capsys) -> None:
    """`mixbench list adapters -v`, `mixbench prep --adapter NAME --help` and the README show every
    adapter's options (paired-features' were only in a docstring)."""
    import prep
    from mixbench.cli import main

    assert main(["list", "adapters", "-v"]) == 0
    listed = capsys.readouterr().out
    readme = (repo_root / "README.md").read_text()
    start = readme.index("<!-- adapter-options")
    section = readme[readme.index("```\n", start) + 4: readme.index("```\n<!-- /adapter-options -->")]
    assert section == listed, "README adapter options are stale: paste `mixbench list adapters -v` into it"
    for name in prep.list_adapters():
        with pytest.raises(SystemExit):
            main(["prep", "--adapter", name, "--help"])
        shown = capsys.readouterr().out
        for key in prep.get_adapter(name).config_cls.keys():
            if key != "adapter":
                assert f"\n    {key} = " in shown, (name, key)
                assert f"\n    {key} = " in listed, (name, key)
    assert "X{i} for cell i of a cell array" in listed
