"""Benchmark: image embedding throughput, files → features, mixbench's encode pipeline against a
naive open_clip loop, same model, same weights, same precision, same worker count, same run.

Data: realistic JPEGs generated once into ``--data-dir`` (about 500×375, a fifth of them portrait
375×500; gradients, shapes, noise and text-like strokes; quality 90), listed in a raw store.

* **ours**: ``embed.encode.encode_store`` end to end: DataLoader workers read the bytes, JPEGs are
  decoded on the GPU in batches (``decode_jpeg(device="cuda")``; PIL in the workers on the CPU),
  resized/normalised on the device, bf16/fp16 autocast on CUDA, features written to HDF5 shards.
  images/s counts the encode loop (input shards → output shards), not the model build.
* **baseline**: a standard ``DataLoader`` whose workers open each file with PIL and apply
  open_clip's own preprocess transform; batches go to the device for ``encode_image``.

The model is ViT-B-32 with random (seeded) weights: speed does not depend on the weights. The
two feature sets are compared (mean cosine) as a check that both paths compute the same thing.

    python bench/embed.py --quick                       # small CPU run (32 images)
    python bench/embed.py --n 50000 --batch-size 512 --workers 12 --device cuda

Target on one H100: >= 5,000 images/s end to end for ours. Timings printed by this script are
from the machine it runs on; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the packages (embed, train, ...) before bench/, whose scripts share their names

from embed.encode import encode_store
from embed.encoders.base import autocast, resolve_precision, seeded_init
from mixbench.device import resolve_device
from mixbench.store.shards import Column, Store, StoreWriter, base_schema

log = logging.getLogger("bench.embed")


# -- data ------------------------------------------------------------------------------------------
def make_jpeg(path: Path, seed: int, index: int, quality: int = 90) -> None:
    """One photo-like JPEG: gradient sky/ground, shapes, sensor noise and rows of text strokes."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng([seed, index])
    w, h = (375, 500) if index % 5 == 4 else (500, 375)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    tilt = np.linspace(-0.15, 0.15, w)[None, :, None] * rng.uniform(-1, 1)
    img = np.clip(top * (1 - t - tilt) + bottom * (t + tilt), 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = int(rng.integers(-50, w)), int(rng.integers(-50, h))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle([x0, y0, x1, y1], fill=color)
        elif kind == 1:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(pts, fill=color)
    im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 1.5))))
    draw = ImageDraw.Draw(im)
    ink = tuple(int(c) for c in rng.integers(0, 80, 3))
    y = int(rng.integers(10, h // 2))
    for _ in range(int(rng.integers(1, 5))):  # lines of "text": short strokes with gaps
        x = int(rng.integers(5, w // 4))
        while x < w - 20:
            wlen = int(rng.integers(8, 40))
            for cx in range(x, min(w - 5, x + wlen), 5):
                draw.line([(cx, y), (cx + int(rng.integers(1, 5)), y + int(rng.integers(6, 12)))], fill=ink, width=2)
            x += wlen + int(rng.integers(5, 12))
        y += int(rng.integers(16, 28))
    arr = np.asarray(im).astype(np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)


def _make_one(args: tuple[str, int, int]) -> None:
    make_jpeg(Path(args[0]), args[1], args[2])


def ensure_images(folder: Path, n: int, seed: int, procs: int) -> list[str]:
    """Generate the JPEGs that are not there yet (kept for later runs); returns relative names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i:07d}.jpg" for i in range(n)]
    todo = [(str(folder / nm), seed, i) for i, nm in enumerate(names) if not (folder / nm).exists()]
    if todo:
        log.info("generating %d JPEGs in %s", len(todo), folder)
        t0 = time.perf_counter()
        if procs > 1 and len(todo) > 64:
            with mp.get_context("fork").Pool(procs) as pool:
                pool.map(_make_one, todo, chunksize=64)
        else:
            for item in todo:
                _make_one(item)
        log.info("generated in %.1f s", time.perf_counter() - t0)
    return names


def write_raw_store(out: Path, image_root: Path, names: list[str], shard_rows: int) -> Store:
    schema = {"image": {**base_schema(), "path": Column("str")}}
    w = StoreWriter(out, kind="paired", dataset="bench-jpeg", classes=["x"], schema=schema, lineage=[],
                    run_key="bench", overwrite=True)
    for k, a in enumerate(range(0, len(names), shard_rows)):
        part = names[a : a + shard_rows]
        w.write_shard("train", k, {"image": {"id": part, "label": np.zeros(len(part), dtype=np.int64),
                                             "pair": np.arange(a, a + len(part)), "path": part}})
    w.finish({"image_root": str(image_root)})
    return Store(out)


# -- the two paths -------------------------------------------------------------------------------
def run_ours(src: Store, out: Path, args: argparse.Namespace, device: torch.device) -> tuple[dict[str, float], np.ndarray]:
    table = {"encoder": "open_clip", "model": args.model, "allow_random": True, "batch_size": args.batch_size,
             "workers": args.workers, "precision": args.precision, "seed": 0}
    t0 = time.perf_counter()
    store = encode_store(src, out, {"image": table}, base_dir=REPO, device=device, lineage=[], run_key="bench",
                         max_reject_fraction=0.0, dtype="float16", overwrite=True)
    wall = time.perf_counter() - t0
    rt = store.info["runtime"]
    n = store.rows("train", "image")
    feats = store.load("train", "image")["feat"].astype(np.float32)
    return {"images": n, "seconds": rt["encode_s"], "images_per_s": n / rt["encode_s"], "wall_with_setup_s": wall}, feats


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], transform: Any) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.transform(im)


def run_baseline(paths: list[Path], args: argparse.Namespace, device: torch.device) -> tuple[dict[str, float], np.ndarray]:
    import open_clip

    with seeded_init(0):  # the same random weights as ours (built on the CPU, then moved)
        model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None, device="cpu")
    model = model.to(device).eval()
    precision = resolve_precision(args.precision, device)
    loader = torch.utils.data.DataLoader(_Files(paths, preprocess), batch_size=args.batch_size, shuffle=False,
                                         num_workers=args.workers, pin_memory=device.type == "cuda")
    out: list[torch.Tensor] = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in loader:
            x = x.to(device, non_blocking=True)
            with autocast(device, precision):
                f = model.encode_image(x)
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).half().cpu())
    sync()
    sec = time.perf_counter() - t0
    feats = torch.cat(out).float().numpy()
    return {"images": len(paths), "seconds": sec, "images_per_s": len(paths) / sec}, feats


# -- main ----------------------------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="number of images (default 20000)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers, the same for both paths")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random init)")
    p.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "mixbench" / "bench-embed",
                   help="where the generated JPEGs are kept between runs")
    p.add_argument("--shard-rows", type=int, default=0, help="rows per input shard (default: n/8, at least 1000)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="small CPU run: 32 images, batch 16, 2 workers")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.batch_size, args.workers, args.device = 32, 16, 2, "cpu"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    device = resolve_device(args.device)
    img_dir = args.data_dir / "jpeg-500x375-q90"
    names = ensure_images(img_dir, args.n, seed=0, procs=max(1, args.workers))
    shard_rows = args.shard_rows or max(1000, math.ceil(args.n / 8))
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        src = write_raw_store(Path(tmp) / "raw", img_dir, names, shard_rows)
        ours, f_ours = run_ours(src, Path(tmp) / "ours", args, device)
        results: dict[str, Any] = {"ours": ours}
        if not args.skip_baseline:
            base, f_base = run_baseline([img_dir / n for n in names], args, device)
            results["baseline"] = base
            results["ratio"] = ours["images_per_s"] / base["images_per_s"]
            cos = np.sum(f_ours * f_base, axis=1) / (np.linalg.norm(f_ours, axis=1) * np.linalg.norm(f_base, axis=1))
            results["feature_cosine_mean"] = float(cos.mean())
            results["feature_cosine_min"] = float(cos.min())
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    results["setup"] = {"n": args.n, "batch_size": args.batch_size, "workers": args.workers, "device": str(device),
                        "device_name": gpu, "precision": resolve_precision(args.precision, device), "model": args.model,
                        "torch": torch.__version__, "cpus": mp.cpu_count()}
    print(f"\nembed throughput: {args.model} (random init), {args.n} JPEGs ~500x375, batch {args.batch_size}, "
          f"{args.workers} workers, {results['setup']['precision']} on {device} ({gpu})")
    print(f"{'path':<10} {'images/s':>10} {'seconds':>9}")
    for key in ("ours", "baseline"):
        if key in results:
            r = results[key]
            print(f"{key:<10} {r['images_per_s']:>10.1f} {r['seconds']:>9.2f}")
    if "ratio" in results:
        print(f"ours / baseline: {results['ratio']:.2f}x   feature cosine ours vs baseline: "
              f"mean {results['feature_cosine_mean']:.4f}, min {results['feature_cosine_min']:.4f}")
    print(f"ours incl. model build and store setup: {ours['wall_with_setup_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
