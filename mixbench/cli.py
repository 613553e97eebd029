"""The ``mixbench`` command line: a thin layer over the stage functions.

    mixbench prep    --recipe R | --adapter NAME --set key=value ...   --out DIR
    mixbench embed   SRC OUT [--recipe R] [--dim D ...]
    mixbench unpair  SRC OUT [--recipe R] [--ratio R --mode M --strategy S ...]
    mixbench train   SRC OUT [--recipe R] [--variant V --epochs N ...]
    mixbench run     RECIPE [--out DIR] [--force STAGE] [--until STAGE] [--set stage.key=value]
    mixbench sweep   RECIPE --ratio 0.2,0.6,1.0 --strategy random,loss-highest --seeds 3
    mixbench inspect DIR [--verify] [--headroom]
    mixbench export  STORE OUT --format dm2c|dadh|npz
    mixbench list    adapters|encoders|strategies|variants|recipes

Every stage also runs as ``python -m <stage>`` with the same options as its subcommand.
Option names equal recipe keys (``--test-ratio`` ↔ ``test_ratio``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, MixbenchError

log = logging.getLogger("mixbench")


def _parse_method_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``NAME={TOML inline table}`` per item → ``{NAME: table}``."""

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        name, eq, table = item.partition("=")
        try:
            value = tomllib.loads(f"v = {table}")["v"] if eq else None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--method-options {item!r}: {exc}; write NAME={{key = value, ...}}.") from None
        if not name.strip() or not isinstance(value, dict):
            raise ConfigError(f"--method-options {item!r}: write NAME={{key = value, ...}}, e.g. 'mvcln={{epochs = 30}}'.")
        out[name.strip()] = value
    return out


def _parse_set(items: list[str] | None, *, staged: bool) -> dict[str, Any]:
    """``--set key=value`` (value parsed as a TOML literal, else kept as a string)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value" + (" with key = stage.key" if staged else "") + ".")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if staged:
            if "." not in key:
                from .recipe import SCALAR_KEYS

                if key in SCALAR_KEYS:  # a top-level recipe key (seed = the default seed of every stage)
                    out[key] = value
                    continue
                raise ConfigError(f"--set {item!r}: the key must name its stage (e.g. unpair.ratio=0.5) or be a "
                                  f"top-level recipe key ({', '.join(SCALAR_KEYS)}).")
            stage, sub = key.split(".", 1)
            out.setdefault(stage, {})
            target = out[stage]
            parts = sub.split(".")
            for p in parts[:-1]:
                target = target.setdefault(p, {})
            target[parts[-1]] = value
        else:
            target = out
            parts = key.split(".")
            for p in parts[:-1]:
                target = target.setdefault(p, {})
            target[parts[-1]] = value
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _section(args: argparse.Namespace, stage: str) -> tuple[dict[str, Any], str, Path]:
    """The stage's table from --recipe (if any), its location string and the base folder."""
    if getattr(args, "recipe", None):
        from .recipe import load_recipe
        from .run import _with_seed

        recipe = load_recipe(args.recipe)
        return _with_seed(recipe.section(stage), recipe.seed, stage), recipe.where(stage), recipe.base_dir
    return {}, f"[{stage}]", Path.cwd()


def build_parser() -> argparse.ArgumentParser:
    import embed
    import train
    import unpair

    parser = argparse.ArgumentParser(
        prog="mixbench",
        description="Turn paired multimodal datasets into mixed-modal benchmarks and train DM2C on them.",
    )
    parser.add_argument("--version", action="version", version=f"mixbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("prep", help="read a raw paired dataset and write a paired store",
                       description="Read a raw paired dataset, validate it, write the canonical sharded store.")
    p.add_argument("--recipe", help="take the [prep] table of this recipe")
    p.add_argument("--adapter", help="dataset adapter (see `mixbench list adapters`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="an adapter option, e.g. root=data/wikipedia")
    p.add_argument("--out", required=True, help="output store folder")
    p.add_argument("--overwrite", action="store_true", help="replace a complete store at --out")
    _common(p)

    for name, cls, helptext in (
        ("embed", embed.EmbedConfig, "encode features and PCA both modalities to a shared dimension"),
        ("unpair", unpair.UnpairConfig, "break a ratio of the training pairs into a mixed-modal benchmark"),
        ("train", train.TrainConfig, "train DM2C (and k-means baselines) on a benchmark store"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        p.add_argument("src", help="input store folder")
        p.add_argument("out", help="output folder")
        p.add_argument("--recipe", help=f"take the [{name}] table of this recipe (flags override it)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config key as a TOML value, nested keys with dots (embed: encoders.image.encoder=open_clip)")
        p.add_argument("--overwrite", action="store_true", help="replace a complete output")
        cls.add_arguments(p)
        _common(p)

    p = sub.add_parser("run", help="run every stage of a recipe (skips stages already done)",
                       description="Run prep → embed → unpair → train from a recipe. A stage whose output "
                       "records the same config and inputs is reused.")
    p.add_argument("recipe", help="recipe file, e.g. data/recipes/wikipedia.toml")
    p.add_argument("--out", help="output root (default: out/<recipe name>)")
    p.add_argument("--force", choices=("prep", "embed", "unpair", "train"), help="redo this stage and every later one")
    p.add_argument("--until", choices=("prep", "embed", "unpair", "train"), help="stop after this stage")
    p.add_argument("--set", action="append", metavar="STAGE.KEY=VALUE",
                   help="override a recipe key, e.g. train.seed=3, or the recipe's top-level seed (seed=3)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a stage output of another config (e.g. another seed) instead of stopping")
    _common(p)

    p = sub.add_parser("sweep", help="run a grid of ratios × strategies × seeds and tabulate it",
                       description="Run a recipe over ratios × strategies × seeds, reusing shared upstream "
                       "stores; write one table (mean ± std per cell) and one plot.")
    p.add_argument("recipe")
    p.add_argument("--ratio", default="0.2,0.4,0.6,0.8,1.0", help="comma-separated ratios")
    p.add_argument("--strategy", default="random,loss-highest", help="comma-separated strategies")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (each seeds unpair and train)")
    p.add_argument("--out", help="output root (default: out/<recipe name>-sweep)")
    p.add_argument("--metric", help="metric tabulated and plotted against ratio: a clustering metric (acc, nmi, ...; "
                   "default acc) or, for a retrieval method, map_mean (default), map_i2t, map_t2i, map_at_r_mean, ...")
    p.add_argument("--mode", help="comma-separated unpairing modes to sweep as well (drop,zero,decouple; default: "
                   "the recipe's [unpair] mode only)")
    p.add_argument("--jobs", type=int, default=1,
                   help="cells trained at a time, each in its own process (results as one at a time; e.g. the core count)")
    p.add_argument("--batched", action="store_true",
                   help="train the cells' faithful DM2C runs as --jobs stacked programs (train.dm2c_stacked; equal to "
                   "one-by-one runs up to float rounding)")
    p.add_argument("--methods", help="comma-separated methods trained on every cell, in one table and plot: NAME, "
                   "NAME:VARIANT or a variant name, e.g. dm2c,dm2c-linked,mvcln,mvcln-plus,sure (default: the "
                   "recipe's [train] method alone)")
    p.add_argument("--method-options", action="append", metavar="NAME=TABLE",
                   help="[train] method_options of one method in a --methods sweep, a TOML inline table, e.g. "
                   "'mvcln={epochs = 30, hiddens = [256, 256, 256]}' (repeatable)")
    p.add_argument("--set", action="append", metavar="STAGE.KEY=VALUE", help="override a recipe key")
    _common(p)

    p = sub.add_parser("inspect", help="summarise a store (or run folder); --verify rechecks it",
                       description="Print splits, rows per modality, paired/unpaired counts, label histogram, "
                       "dims and lineage of a store. --verify rechecks every checksum and the schema.")
    p.add_argument("path", help="store folder")
    p.add_argument("--verify", action="store_true", help="recheck every checksum and the schema")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--headroom", action="store_true",
                   help="benchmark store: cluster each modality alone and print the random- and oracle-alignment "
                   "ACC bounds (train.headroom; uses the labels, for reading results only)")
    _common(p)

    p = sub.add_parser("export", help="export a store to DM2C / DADH .mat files or npz",
                       description="Export a (benchmark) store to other tools' formats: dm2c (the four .mat files "
                       "of DM2C's code), dadh (UMML/DADH feature .mat, missing halves zero-filled) or npz.")
    p.add_argument("store", help="store folder (usually a benchmark store from unpair)")
    p.add_argument("out", help="output folder")
    p.add_argument("--format", required=True, choices=("dm2c", "dadh", "npz"))
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    _common(p)

    p = sub.add_parser("list", help="list adapters, encoders, strategies, methods, variants or recipes",
                       description="List what is available. `mixbench list adapters -v` also shows every "
                       "adapter's options (its [prep] keys).")
    p.add_argument("what", choices=("adapters", "encoders", "strategies", "methods", "variants", "recipes"))
    _common(p)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)


def _stage_config(args: argparse.Namespace, stage: str, cls: Any) -> tuple[Any, Path]:
    table, where, base = _section(args, stage)
    overrides = cls.cli_overrides(args)
    sets = _parse_set(args.set, staged=False)
    table = {**table, **overrides}
    for k, v in sets.items():
        if isinstance(v, dict) and isinstance(table.get(k), dict):
            table[k] = {**table[k], **v}
        else:
            table[k] = v
    try:
        return cls.from_dict(table, where), base
    except ConfigError as exc:
        raise _blame_set(exc, where, stage, args.set) from None


def _blame_set(exc: ConfigError, where: str, stage: str, items: list[str] | None) -> ConfigError:
    """``exc`` renamed after the ``--set KEY=VALUE`` that caused it (else unchanged)."""
    msg = str(exc)
    rest = msg.removeprefix(where)
    for item in items or []:
        key = item.split("=", 1)[0].split(".", 1)[0]
        if rest != msg and (rest.startswith(f" {key} ") or f"unknown key '{key}'" in rest):
            return ConfigError(f"--set {item}: [{stage}]{rest}")
    return exc


def _adapter_epilog(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``mixbench prep --adapter NAME --help``: the adapter's options follow the usual help."""
    if not argv or argv[0] != "prep" or not {"-h", "--help"} & set(argv):
        return
    name = None
    for i, a in enumerate(argv):
        if a == "--adapter" and i + 1 < len(argv):
            name = argv[i + 1]
        elif a.startswith("--adapter="):
            name = a.split("=", 1)[1]
    import prep

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["prep"]
    sub.formatter_class = argparse.RawDescriptionHelpFormatter
    if name is None:
        sub.epilog = ("adapters: " + ", ".join(prep.list_adapters())
                      + ". Their options: mixbench prep --adapter NAME --help, or mixbench list adapters -v.")
        return
    try:
        sub.epilog = prep.adapter_help(name)
    except MixbenchError as exc:
        sub.epilog = str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    _adapter_epilog(parser, argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _setup_logging(args)
    try:
        return _dispatch(args)
    except MixbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder...: one line with the fix, never a traceback
        from .errors import os_error_message

        log.debug("OSError", exc_info=True)
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume (finished shards are kept).", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "prep":
        import prep

        table, where, base = _section(args, "prep")
        if args.adapter:
            table["adapter"] = args.adapter
        table.update(_parse_set(args.set, staged=False))
        if "adapter" not in table:
            raise ConfigError(f"prep: give --adapter (one of {', '.join(prep.list_adapters())}) or --recipe.")
        try:
            cfg = prep.make_config(table, where)
        except ConfigError as exc:
            raise _blame_set(exc, where, "prep", args.set) from None
        manifest = prep.prepare(cfg, args.out, base_dir=base, overwrite=args.overwrite)
        print(_store_line(args.out, manifest))
        return 0
    if args.command in ("embed", "unpair"):
        import embed
        import unpair

        if args.command == "embed":
            cfg, base = _stage_config(args, "embed", embed.EmbedConfig)
            manifest = embed.embed(args.src, args.out, cfg, base_dir=base, overwrite=args.overwrite)
        else:
            cfg, _ = _stage_config(args, "unpair", unpair.UnpairConfig)
            manifest = unpair.unpair(args.src, args.out, cfg, overwrite=args.overwrite)
        print(_store_line(args.out, manifest))
        return 0
    if args.command == "train":
        import train

        cfg, _ = _stage_config(args, "train", train.TrainConfig)
        result = train.train(args.src, args.out, cfg, overwrite=args.overwrite)
        print(result.get("table", ""))
        print(f"run folder: {result['run_dir']}")
        return 0
    if args.command == "run":
        from .run import run_recipe

        summary = run_recipe(args.recipe, out=args.out, force=args.force, until=args.until,
                             overrides=_parse_set(args.set, staged=True), overwrite=args.overwrite)
        for stage, s in summary["stages"].items():
            state = "reused" if s["reused"] else f"{s['seconds']:.1f} s"
            print(f"{stage:7s} {state:>10s}  {s['dir']}")
        if "train" in summary:
            print()
            print(summary["train"].get("table", ""))
            print(f"\nreport: {Path(summary['train']['run_dir']) / 'report.md'}")
        return 0
    if args.command == "sweep":
        from .sweep import run_sweep

        result = run_sweep(
            args.recipe,
            ratios=[float(x) for x in args.ratio.split(",") if x],
            strategies=[x for x in args.strategy.split(",") if x],
            seeds=args.seeds,
            out=args.out,
            metric=args.metric,
            overrides=_parse_set(args.set, staged=True),
            modes=[x for x in args.mode.split(",") if x] if args.mode else None,
            jobs=args.jobs,
            batched=args.batched,
            methods=[x for x in args.methods.split(",") if x] if args.methods else None,
            method_options=_parse_method_options(args.method_options),
        )
        print(result["table"])
        print(f"\ntable: {result['table_path']}\nplot:  {result['plot_path']}")
        return 0
    if args.command == "inspect":
        from mixbench.store.inspect import describe, verify_store

        if args.json:
            from mixbench.store.inspect import RUN_RECORD
            from mixbench.store.shards import Store

            run_record = Path(args.path) / RUN_RECORD
            if not (Path(args.path) / "manifest.json").exists() and run_record.is_file():
                print(json.dumps(json.loads(run_record.read_text(encoding="utf-8")), indent=2))
            else:
                print(json.dumps(Store(args.path, verify=False).manifest, indent=2))
        else:
            print(describe(args.path))
        if args.verify:
            problems = verify_store(args.path)
            if problems:
                print(f"\nverify: {len(problems)} problem(s):")
                for prob in problems:
                    print(f"  - {prob}")
                return 1
            print("\nverify: OK (every checksum and the schema match the manifest)")
        if args.headroom:
            from train.data import BenchmarkData
            from train.headroom import headroom

            print("\nheadroom (k-means per modality, seed 0; labels used, for reading results only):")
            for split, res in headroom(BenchmarkData.from_store(args.path)).items():
                print(f"  {split:6s} " + "  ".join(f"{k} {v:.4g}" for k, v in res.items()))
        return 0
    if args.command == "export":
        from mixbench.store.export import export_store

        record = export_store(args.store, args.out, args.format, overwrite=args.overwrite)
        for f in record.get("files", []):
            print(f"wrote {Path(args.out) / f['file']}")
        return 0
    if args.command == "list":
        return _list(args.what, verbose=args.verbose)
    raise ConfigError(f"unknown command {args.command!r}")


def _list(what: str, *, verbose: bool = False) -> int:
    if what == "adapters":
        import prep

        if verbose:
            print("\n\n".join(prep.adapter_help(name) for name in prep.list_adapters()))
            return 0
        items = [f"{name:16s} {prep.get_adapter(name).description}" for name in prep.list_adapters()]
    elif what == "encoders":
        import embed

        items = embed.list_encoders()
    elif what == "strategies":
        import unpair

        items = unpair.list_strategies()
    elif what == "methods":
        import train

        items = train.list_methods()
    elif what == "variants":
        import train

        items = train.list_variants()
    else:
        root = Path(__file__).resolve().parent.parent / "data" / "recipes"
        items = sorted(str(p) for p in root.glob("*.toml"))
    for item in items:
        print(item)
    return 0


def _store_line(out: Any, manifest: dict[str, Any]) -> str:
    parts = []
    for split, s in manifest.get("splits", {}).items():
        rows = ", ".join(f"{m} {n}" for m, n in s["rows"].items())
        parts.append(f"{split}: {rows}")
    state = " (reused: already complete with the same config and inputs)" if manifest.get("reused") else ""
    return f"wrote {out}{state}\n  " + "\n  ".join(parts)


def stage_main(stage: str) -> None:
    """Entry point of ``python -m <stage>``."""
    sys.exit(main([stage, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
