"""Benchmark: TAC's text space (embed.textspace.build_text_space) for many images against a large
noun vocabulary: images/s per phase and peak memory.

The real code path: a features store of N synthetic image embeddings (unit vectors drawn around
N/300 random directions, written as shards of 4,096 rows) goes through ``build_text_space`` with
a small random open_clip text tower (embed_dim 64, text width 64, 1 layer, context 20: no weights
can be fetched here; a real ViT-B/32 text tower, 12 layers of width 512 over 77 tokens, is several
hundred times the compute per prompt) over the
first ``--nouns`` *distinct* nouns of the shipped WordNet list with TAC's 7 templates. Phases:
noun embeddings (prompts/s), spherical k-means into round(N / 300) centres, noun filtering,
retrieval + writing (images/s). Each size runs in a fresh process so its peak RSS is its own;
the memory claim is checked by running two sizes: the peak grows by about the output (image and
text features, 2 × N × D × 4 bytes) and the training embeddings k-means needs, nothing else.

    python bench/textspace.py                                   # CPU: 100,000 images, 80,000 nouns
    python bench/textspace.py --images 25000,100000 --kmeans-restarts 1
    python bench/textspace.py --device cuda --images 100000,1000000 --kmeans-restarts 10

On a 2-core CPU the k-means is the long part (TAC: 300 iterations × 10 restarts); the default CPU
protocol keeps TAC's 300-iteration cap (stopping early when nothing changes) but one restart.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# bench/ holds embed.py (another benchmark): keep it from shadowing the embed package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

SMALL_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
SHARD = 4096


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(n_images: int, n_nouns: int, restarts: int, iters: int, device: str, work: str) -> dict[str, Any]:
    import torch

    from embed import textspace, wordnet
    from mixbench.store.shards import Store, StoreWriter, feature_schema

    root = Path(work)
    (root / "BenchSmallCLIP.json").write_text(json.dumps(SMALL_CLIP))
    words = list(dict.fromkeys(wordnet.read_list()))[:n_nouns]
    (root / "nouns.txt").write_text("".join(f"{w}\n" for w in words))
    d = SMALL_CLIP["embed_dim"]
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(max(1, n_images // 300), d)).astype(np.float32)
    writer = StoreWriter(root / "images", kind="features", dataset="bench", classes=["0"],
                         schema={"image": feature_schema(d)}, lineage=[], run_key="bench")
    for i, a in enumerate(range(0, n_images, SHARD)):
        b = min(n_images, a + SHARD)
        x = dirs[rng.integers(0, len(dirs), b - a)] + rng.normal(size=(b - a, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        writer.write_shard("train", i, {"image": {"id": np.asarray([f"i{j}" for j in range(a, b)], dtype=object),
                                                  "label": np.zeros(b - a, dtype=np.int64),
                                                  "pair": np.arange(a, b, dtype=np.int64), "feat": x}})
    writer.finish({})
    store = Store(root / "images")
    rss_before = _peak_rss_mib()

    cfg = textspace.TextSourceConfig(
        vocabulary=str(root / "nouns.txt"), kmeans_restarts=restarts, kmeans_iters=iters,
        encoder={"encoder": "open_clip", "model": "BenchSmallCLIP", "model_config": str(root / "BenchSmallCLIP.json"),
                 "allow_random": True})
    times: dict[str, float] = {}
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    import embed.encoders as encoders

    mods = {"embed_nouns": textspace, "spherical_kmeans": textspace, "filter_nouns": textspace,
            "create_encoder": encoders}
    originals = {name: getattr(mod, name) for name, mod in mods.items()}

    def timed(name: str) -> Any:
        fn = originals[name]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            sync()
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            times[name] = times.get(name, 0.0) + time.perf_counter() - t
            return out

        return wrapper

    for name, mod in mods.items():
        setattr(mod, name, timed(name))
    t0 = time.perf_counter()
    out = textspace.build_text_space(store, root / "textspace", cfg, encoders={}, device=dev, base_dir=root,
                                     lineage=[], run_key="bench")
    sync()
    total = time.perf_counter() - t0
    info = out.info["text_source"]
    rest = total - sum(times.values())
    output_mib = 2 * n_images * d * 4 / 2**20
    return {
        "images": n_images, "nouns": len(words), "prompts": len(words) * len(cfg.templates), "dim": d,
        "centres": info["centres"], "nouns_kept": info["nouns_kept"], "restarts": restarts, "iters": iters,
        "device": str(dev), "seconds": {"total": total, "noun_embeddings": times["embed_nouns"],
                                        "kmeans": times["spherical_kmeans"], "filter": times["filter_nouns"],
                                        "load_text_tower": times["create_encoder"],
                                        "load_retrieve_write": rest},
        "prompts_per_s": len(words) * len(cfg.templates) / times["embed_nouns"],
        "images_per_s_retrieval": n_images / rest, "images_per_s_total": n_images / total,
        "peak_rss_mib": _peak_rss_mib(), "rss_before_mib": rss_before, "output_mib": output_mib,
    }


def _child(args: tuple[int, int, int, int, str]) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="mixbench-bench-textspace-") as work:
        return run_one(*args, work=work)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="100000", help="comma-separated image counts (each in a fresh process)")
    ap.add_argument("--nouns", type=int, default=80_000, help="distinct nouns (WordNet has 119,034)")
    ap.add_argument("--kmeans-restarts", type=int, default=1, help="TAC: 10 (default here 1: a CPU protocol)")
    ap.add_argument("--kmeans-iters", type=int, default=300, help="TAC: 300 (stops early when nothing changes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log = logging.getLogger("bench.textspace")
    results = []
    ctx = multiprocessing.get_context("spawn")
    for n in (int(x) for x in args.images.split(",")):
        with ctx.Pool(1) as pool:
            r = pool.apply(_child, ((n, args.nouns, args.kmeans_restarts, args.kmeans_iters, args.device),))
        log.info("%s", json.dumps(r))
        results.append(r)
    print("| images | nouns (prompts) | centres | kept | noun emb. prompts/s | k-means s | retrieval+write img/s | "
          "total s | total img/s | peak RSS MiB | output MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = r["seconds"]
        print(f"| {r['images']:,} | {r['nouns']:,} ({r['prompts']:,}) | {r['centres']} | {r['nouns_kept']} | "
              f"{r['prompts_per_s']:,.0f} | {s['kmeans']:.1f} | {r['images_per_s_retrieval']:,.0f} | {s['total']:.1f} | "
              f"{r['images_per_s_total']:,.0f} | {r['peak_rss_mib']:,.0f} | {r['output_mib']:.1f} |")
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"\npeak RSS grew {b['peak_rss_mib'] - a['peak_rss_mib']:.0f} MiB from {a['images']:,} to {b['images']:,} "
              f"images; output grew {b['output_mib'] - a['output_mib']:.0f} MiB (plus the training embeddings, "
              f"{(b['images'] - a['images']) * b['dim'] * 4 / 2**20:.0f} MiB).")
    print(f"\nmachine: {platform.processor() or platform.machine()}, device {args.device}, Python {sys.version.split()[0]}")
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
