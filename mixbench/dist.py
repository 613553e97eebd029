"""One code path for one process and for ``torchrun`` (torch.distributed), chosen by the environment.

With no ``torch.distributed`` process group (and no ``RANK``/``WORLD_SIZE`` set), every helper
behaves as a single process: rank 0 of 1. Under ``torchrun`` the group is initialised once
(NCCL on CUDA, gloo otherwise). Work units are shards: rank r takes shards r, r+W, r+2W, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init() -> DistInfo:
    """Initialise torch.distributed when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(cuda_index(local))
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)


def cuda_index(local_rank: int) -> int:
    """The CUDA device of a local rank: ``local_rank`` among the visible GPUs, modulo their count (a
    launcher that gives each rank one visible GPU, e.g. SLURM's per-task CUDA_VISIBLE_DEVICES, means 0)."""
    import torch

    n = torch.cuda.device_count()
    return local_rank % n if n else 0


def info() -> DistInfo:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    except ImportError:
        pass
    return DistInfo()


def my_items(items: Sequence[T], d: DistInfo | None = None) -> list[T]:
    """This rank's share of ``items`` (round robin); all of them in a single process."""
    d = d or info()
    return list(items[d.rank :: d.world])


def barrier() -> None:
    if info().enabled:
        import torch.distributed as dist

        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    d = info()
    if not d.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T], *, share: bool = True) -> T | None:
    """Run ``fn`` on rank 0 only and return its result on every rank (``share``; else ``None`` on the
    other ranks, for results that do not pickle). A failure on rank 0 is raised on every rank: a
    :class:`MixbenchError` as itself, anything else as a ``RuntimeError`` naming it, so no rank is
    left waiting in a collective call. In a single process it is just ``fn()``."""
    d = info()
    if not d.enabled:
        return fn()
    from .errors import MixbenchError

    box: tuple[str, Any] = ("ok", None)
    value: T | None = None
    failure: BaseException | None = None
    if d.is_main:
        try:
            value = fn()
            box = ("ok", value if share else None)
        except MixbenchError as exc:
            failure, box = exc, ("err", exc)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the other ranks, or they wait forever
            failure, box = exc, ("fail", f"{type(exc).__name__}: {exc}")
    box = broadcast_object(box if d.is_main else None)
    if failure is not None:
        raise failure
    if box[0] == "err":
        raise box[1]
    if box[0] == "fail":
        raise RuntimeError(f"rank 0 failed ({box[1]}); this rank stops too.")
    return value if d.is_main else box[1]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    d = info()
    if not d.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
