"""Per-epoch evaluation overlapped with training, results taken in epoch order.

DM2C's faithful protocol clusters the embeddings after every joint epoch (k-means with 20 restarts,
then seven metrics). The embedding depends on the weights and must be taken before the next step,
but the k-means fit depends only on that embedding and the k-means seed, so it can run while
training goes on. An evaluation is an :class:`EvalJob`: a picklable ``remote`` part (the k-means:
a module-level function and plain data) and a ``finish`` part (the metrics and the trainer's
bookkeeping) that always runs in the caller, in push order. :class:`EvalQueue` runs the remote parts

- ``"sync"``: at once, in the caller (the synchronous protocol);
- ``"thread"``: in one background thread (both threads share the GIL between their small ops, so
  the gain on a 2-core CPU was uneven: 29.8 s against 39.3 / 36.8 s for one Wikipedia seed on a
  quiet machine, none on a noisy one);
- ``"process"``: in one worker process (:class:`train.eval_worker.ProcessWorker`), which runs on
  the second core without the GIL.

The results are the same in every mode (the same arithmetic on the same tensors with the same
intra-op thread count; only *where* and *when* it runs changes), which ``tests/test_eval_queue.py``
checks bit for bit. ``[train] eval_background`` picks the mode (``train.dm2c.background_eval``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

MODES = ("sync", "thread", "process")
#: In ``process`` mode the caller runs the oldest job the worker has not started itself once this
#: many wait (the worker has fallen behind: e.g. several stacked runs' k-means per epoch).
HELP_BACKLOG = 2


@dataclass
class EvalJob:
    """One evaluation: ``remote(*args)`` (picklable when the queue runs it in a process), then
    ``finish(its result)`` in the caller. Calling the job runs both at once."""

    remote: Callable[..., Any]
    args: tuple[Any, ...] = ()
    finish: Callable[[Any], Any] = field(default=lambda r: r)

    def __call__(self) -> Any:
        return self.finish(self.remote(*self.args))


class EvalQueue:
    """Items in order, each with an optional :class:`EvalJob` whose finished result is handed back
    with the item (see the module doc for the modes). ``threads``: the torch intra-op threads of a
    background thread or process (``None``: the caller's current count, so results match)."""

    def __init__(self, mode: str = "sync", threads: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"EvalQueue mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode
        self._items: deque[tuple[Any, EvalJob | None, Future[Any] | None]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._worker: Any = None
        self._threads = n = threads or torch.get_num_threads()
        if mode == "thread":
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="mixbench-eval",
                                            initializer=lambda: torch.set_num_threads(n))

    def push(self, item: Any, job: EvalJob | None = None) -> None:
        """Queue ``item``; ``job``'s remote part (if any) runs now (sync) or in the worker."""
        fut: Future[Any] | None = None
        if job is not None:
            if self._pool is not None:
                fut = self._pool.submit(job.remote, *job.args)
            elif self.mode == "process":
                if self._worker is None:  # started with the first job: its start-up overlaps the caller's work
                    from .eval_worker import ProcessWorker

                    try:
                        self._worker = ProcessWorker(self._threads)
                    except OSError as exc:
                        log.warning("could not start the evaluation worker process (%s); evaluating in this "
                                    "process instead (same results)", exc)
                        self.mode = "sync"
                        self.push(item, job)
                        return
                fut = self._worker.submit(job.remote, *job.args)
                if self._worker.backlog >= HELP_BACKLOG or self._worker.dead:
                    self._worker.run_one_here()
            else:
                fut = Future()
                try:
                    fut.set_result(job.remote(*job.args))
                except Exception as exc:  # raised from ready(), in order, as in the other modes
                    fut.set_exception(exc)
        self._items.append((item, job, fut))

    def ready(self, wait: bool = False) -> Iterator[tuple[Any, Any]]:
        """``(item, finished job result or None)`` in push order: the items whose job (and every
        earlier item's) has finished, or all of them when ``wait``. A job's exception is raised here."""
        while self._items:
            item, job, fut = self._items[0]
            if fut is not None and not fut.done() and self._worker is not None and (wait or self._worker.dead):
                while not fut.done() and self._worker.run_one_here():
                    pass  # rather than wait: the jobs the worker has not started, here
            if fut is not None and not wait and not fut.done():
                return
            result = job.finish(fut.result()) if job is not None and fut is not None else None
            self._items.popleft()
            yield item, result

    def close(self, cancel: bool = True) -> None:
        """Stop the worker; jobs not started are dropped (``cancel``) or run first, and results not
        taken are dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
        if self._worker is not None:
            self._worker.close(cancel=cancel)
            self._worker = None
        self._items.clear()

    def __enter__(self) -> EvalQueue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
