"""Run the reference DM2C code (a checkout of jiangyangby/DM2C, never vendored) on a benchmark store.

``bench/dm2c.py --reference DIR`` calls this in a child process so that the reference runs on the
same machine, on the same data, in the same benchmark run as mixbench, and the speed ratio is
measured rather than recorded. It can also run alone::

    python bench/dm2c_reference.py --reference /path/to/DM2C --store out/bench-dm2c/unpair \\
        --work /tmp/ref --seed 0 --out ref.json

What it does, and why each step is there:

1. The store is exported in the reference's own input format (``mixbench.store.export``, format
   ``dm2c``: ``train_file.mat``, ``test_file.mat``, ``train_img.mat``, ``train_txt.mat``).
2. The reference's ``code/model.py`` is imported from the checkout, unmodified, after a few import
   shims that change no arithmetic: ``tensorboardX.SummaryWriter`` becomes a no-op (not
   installed), ``munkres.Munkres.compute`` is answered by ``scipy.optimize.linear_sum_assignment``
   (same optimal assignment), ``sklearn.metrics.cluster.supervised`` is aliased to its current
   name ``_supervised``, ``torch.load`` keeps the pre-2.6 ``weights_only=False`` default, and on a
   machine without CUDA ``.cuda()`` is a no-op (the reference calls it unconditionally).
3. The protocol is the reference README's three ``train.py`` invocations, run in one process:
   pre-train the image AE (``--pretrain img --lr_ae 1e-4``), the text AE (``--pretrain txt
   --lr_ae 1e-5``), each with a fresh model, ``torch.manual_seed(seed)`` and the default weight
   decay 1e-4; then the joint phase (``--pretrain load_ae --lr_g 1e-4 --lr_d 5e-5 --lr_ae 5e-4
   --gan_type wasserstein --weight_decay 0 --lamda3 0.5 --lamda1 1``) with ``train.py``'s
   evaluation loop (embed train and test into the image latent space, ``KMeans(10, max_iter=1000,
   tol=5e-5, n_init=20)``, ``calculate_metrics``) every epoch. Every other flag is ``train.py``'s
   default (batch 128, 8 DataLoader workers, critic every 5th step, clipping 0.05). The layer
   widths follow the input dimension as mixbench's do (``[32, 16, 8]`` at d = 10).

The JSON result holds the in-process seconds per part (imports, each pre-training, joint training
steps, embedding, k-means, metrics) and the final-epoch train / test metrics in the reference's
order (ACC, ARI, NMI, F, precision, recall, purity).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
METRIC_NAMES = ("acc", "ari", "nmi", "f_score", "precision", "recall", "purity")
TRAIN_PY_DEFAULTS: dict[str, Any] = {
    # code/train.py's argparse defaults, flag by flag
    "n_epochs": 200, "batch_size": 128, "lr_g": 1e-4, "lr_d": 1e-4, "lr_ae": 1e-4, "b1": 0.5, "b2": 0.999,
    "weight_decay": 1e-4, "lamda1": 1.0, "lamda3": 1.0, "gan_type": "naive", "clip_value": 0.05, "n_cpu": 8,
    "seed": 2018, "update_p_freq": 10, "update_d_freq": 5, "tol": 1e-3, "save_freq": 25, "log_freq": 5,
    "test_freq": 1, "pretrain": "None", "dataset": "wikipedia", "data_dir": "data/wikipedia/", "log_dir": "log/",
    "cpt_dir": "cpt/", "img_cptpath": "cpt/", "txt_cptpath": "cpt/", "dm2c_cptpath": "cpt/",
}


def default_hiddens(dim: int) -> list[int]:
    """The same width rule as mixbench (train.dm2c.default_hiddens), repeated here so that this
    script imports nothing of mixbench in the timed process."""
    def p2(x: float) -> int:
        return 1 if x < 2 else 1 << (int(x).bit_length() - 1)
    latent = min(128, p2(dim - 1))
    return [max(4 * latent, p2(dim / 2)), 2 * latent, latent]


def export(store: Path, data_dir: Path) -> dict[str, Any]:
    """The store in the reference's input format (in the parent process, untimed)."""
    sys.path.insert(0, str(REPO))
    from mixbench.store.export import export_store

    return export_store(store, data_dir, "dm2c", overwrite=True)


def install_shims(cuda: bool) -> None:
    """Import shims that change no arithmetic (module docstring, step 2)."""
    import torch

    tbx = types.ModuleType("tensorboardX")

    class SummaryWriter:
        def __init__(self, *a: Any, **k: Any) -> None:
            pass

        def add_scalar(self, *a: Any, **k: Any) -> None:
            pass

    tbx.SummaryWriter = SummaryWriter  # type: ignore[attr-defined]
    sys.modules.setdefault("tensorboardX", tbx)

    mk = types.ModuleType("munkres")

    class Munkres:
        def compute(self, cost: Any) -> list[tuple[int, int]]:
            import numpy as np
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(np.asarray(cost))
            return [(int(r), int(c)) for r, c in zip(rows, cols)]

    mk.Munkres = Munkres  # type: ignore[attr-defined]
    sys.modules.setdefault("munkres", mk)

    sup = importlib.import_module("sklearn.metrics.cluster._supervised")
    sys.modules.setdefault("sklearn.metrics.cluster.supervised", sup)

    load = torch.load

    def torch_load(*a: Any, **k: Any) -> Any:
        k.setdefault("weights_only", False)
        return load(*a, **k)

    torch.load = torch_load  # type: ignore[assignment]
    if not cuda:
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]


def run_reference(ref: Path, data_dir: Path, work: Path, seed: int, pre_epochs: int, epochs: int,
                  dim: int, n_init: int = 20) -> dict[str, Any]:
    """The three phases in this process; returns timings and final metrics."""
    t0 = time.perf_counter()
    import torch

    cuda = torch.cuda.is_available()
    install_shims(cuda)
    code = ref / "code"
    sys.path.insert(0, str(code))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # model.py's logging.basicConfig writes output.log into the working directory
    import model as ref_model  # the reference's code/model.py
    from sklearn.cluster import KMeans
    from utils import calculate_metrics  # the reference's code/utils.py

    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    seconds: dict[str, float] = {"imports": time.perf_counter() - t0 + (t0 - T_START)}
    hiddens = default_hiddens(dim)
    latent = hiddens[-1]
    config = {"img_input_dim": dim, "txt_input_dim": dim, "n_clusters": 10, "img_hiddens": hiddens,
              "txt_hiddens": list(hiddens), "img2txt_hiddens": [latent, 2 * latent, latent],
              "txt2img_hiddens": [latent, 2 * latent, latent], "has_filename": True, "batchnorm": True,
              "cuda": cuda, "device": torch.device("cuda:0" if cuda else "cpu")}

    def build(phase: str, **flags: Any) -> Any:
        args = argparse.Namespace(**{**TRAIN_PY_DEFAULTS, **flags, "seed": seed, "data_dir": str(data_dir),
                                     "log_dir": str(work / "log") + "/", "cpt_dir": str(work / "cpt" / phase)})
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
        Path(args.cpt_dir).mkdir(parents=True, exist_ok=True)
        logger = logging.getLogger(ref_model.__name__)
        for h in list(logger.handlers):  # one process per phase in the reference: fresh handlers
            logger.removeHandler(h)
        torch.manual_seed(seed)
        m = ref_model.MultimodalGAN(args, {**config, "log_file": f"{phase}.txt"})
        if cuda:
            m.to_cuda()
        return m

    cpts = {}
    for modal, lr in (("img", 1e-4), ("txt", 1e-5)):
        t = time.perf_counter()
        m = build(f"pretrain-{modal}", pretrain=modal, lr_ae=lr, log_freq=15, n_epochs=pre_epochs)
        m.pretrain(modal)
        last = Path(m.args.cpt_dir) / f"wikipedia_{modal}_pretrain_checkpt_{pre_epochs - 1}.pkl"
        if not last.exists():  # save_freq 25 does not divide a short schedule
            m.save_pretrain_cpt(pre_epochs - 1, modal)
        cpts[modal] = str(last)
        if cuda:
            torch.cuda.synchronize()
        seconds[f"pretrain-{modal}"] = time.perf_counter() - t

    m = build("joint", pretrain="load_ae", lr_g=1e-4, lr_d=5e-5, lr_ae=5e-4, gan_type="wasserstein",
              n_epochs=epochs, weight_decay=0.0, lamda3=0.5, lamda1=1.0, img_cptpath=cpts["img"],
              txt_cptpath=cpts["txt"])
    m.load_pretrain_cpt(cpts["img"], "img", only_weight=True)
    m.load_pretrain_cpt(cpts["txt"], "txt", only_weight=True)
    parts = {"joint-train": 0.0, "eval-embed": 0.0, "kmeans": 0.0, "metrics": 0.0}
    train_metrics = test_metrics = None
    for epoch in range(epochs):  # code/train.py's joint loop
        t = time.perf_counter()
        m.train(epoch)
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        train_embedding, train_target, _ = m.embedding(m.train_loader_ordered, unify_modal="img")
        test_embedding, test_target, _ = m.embedding(m.test_loader, unify_modal="img")
        t2 = time.perf_counter()
        kmeans = KMeans(config["n_clusters"], max_iter=1000, tol=5e-5, n_init=n_init).fit(train_embedding)
        t3 = time.perf_counter()
        train_metrics = calculate_metrics(train_target, kmeans.labels_)
        y_pred = kmeans.predict(test_embedding)
        test_metrics = calculate_metrics(test_target, y_pred)
        t4 = time.perf_counter()
        for k, a, b in (("joint-train", t, t1), ("eval-embed", t1, t2), ("kmeans", t2, t3), ("metrics", t3, t4)):
            parts[k] += b - a
    seconds.update(parts)
    seconds["in-process"] = time.perf_counter() - T_START
    named = (lambda v: dict(zip(METRIC_NAMES, map(float, v))) if v is not None else None)
    return {"seed": seed, "seconds": seconds, "train": named(train_metrics), "test": named(test_metrics),
            "pretrain_epochs": pre_epochs, "epochs": epochs, "n_init": n_init, "device": "cuda" if cuda else "cpu",
            "torch_threads": torch.get_num_threads(), "config": {k: v for k, v in config.items() if k != "device"}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, required=True, help="a checkout of jiangyangby/DM2C (holds code/model.py)")
    p.add_argument("--data", type=Path, help="the reference-format data folder (already exported)")
    p.add_argument("--store", type=Path, help="a benchmark store to export into WORK/data first")
    p.add_argument("--dim", type=int, default=0, help="feature dim (default: read from the exported data)")
    p.add_argument("--work", type=Path, required=True, help="scratch folder (checkpoints, logs, exported data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-epochs", type=int, default=150)
    p.add_argument("--epochs", type=int, default=220)
    p.add_argument("--n-init", type=int, default=20, help="k-means restarts (train.py: 20; change only for smoke runs)")
    p.add_argument("--out", type=Path, help="write the JSON result here (default: stdout)")
    args = p.parse_args(argv)
    if not (args.reference / "code" / "model.py").is_file():
        p.error(f"--reference {args.reference}: no code/model.py there; pass a checkout of jiangyangby/DM2C")
    data = args.data
    if args.store is not None:
        data = args.work.resolve() / "data"
        export(args.store, data)
    if data is None:
        p.error("give --data (exported files) or --store (a benchmark store to export)")
    dim = args.dim
    if not dim:
        import scipy.io

        dim = int(scipy.io.loadmat(str(Path(data) / "train_img.mat"))["X"][0][0].size)
    result = run_reference(args.reference.resolve(), Path(data).resolve(), args.work.resolve(), args.seed,
                           args.pretrain_epochs, args.epochs, dim, args.n_init)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
