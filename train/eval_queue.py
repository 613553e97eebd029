"""Per-epoch evaluation overlapped with training, results taken in epoch order.

DM2C's faithful protocol clusters the embeddings after every joint epoch (k-means with 20 restarts,
then seven metrics). The embedding depends on the weights and must be taken before the next step,
but the k-means fit and the metrics depend only on that embedding and the k-means seed, so they
can run while training goes on. :class:`EvalQueue` runs such jobs in one background thread, in
submission order, and hands their results back in that order. The results are the same as those
of the synchronous evaluation (the same arithmetic on the same tensors with the same intra-op
thread count; only *when* it runs changes), which ``tests/test_eval_queue.py`` checks bit for bit.

It can pay on CPU when a core is otherwise idle (one training thread on a 2-core machine); on an
accelerator the kernels are asynchronous already and it is not used. Measured on a 2-core CPU, one
Wikipedia seed, full protocol: 29.8 s against 39.3 / 36.8 s synchronous on a quiet machine, but
no gain or a loss on a noisy one (both threads need the GIL between their small ops), so
``[train] eval_background`` is ``off`` by default and opt-in (``on`` / ``auto``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch


class EvalQueue:
    """Items in order, each with an optional job whose result is handed back with the item.

    ``background`` False runs every job at once in the caller's thread (the synchronous protocol);
    True runs them in one worker thread with ``threads`` torch intra-op threads (``None``: torch's
    default), so the caller goes on while they run.
    """

    def __init__(self, background: bool, threads: int | None = None) -> None:
        self._items: deque[tuple[Any, Future[Any] | None]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        if background:
            init = (lambda: torch.set_num_threads(threads)) if threads else None
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="mixbench-eval", initializer=init)

    def push(self, item: Any, job: Callable[[], Any] | None = None) -> None:
        """Queue ``item``; ``job`` (if any) runs now (synchronous) or in the worker (background)."""
        fut: Future[Any] | None = None
        if job is not None:
            if self._pool is not None:
                fut = self._pool.submit(job)
            else:
                fut = Future()
                fut.set_result(job())
        self._items.append((item, fut))

    def ready(self, wait: bool = False) -> Iterator[tuple[Any, Any]]:
        """``(item, job result or None)`` in push order: the items whose job (and every earlier
        item's) has finished, or all of them when ``wait``. A job's exception is raised here."""
        while self._items:
            item, fut = self._items[0]
            if fut is not None and not wait and not fut.done():
                return
            result = fut.result() if fut is not None else None
            self._items.popleft()
            yield item, result

    def close(self) -> None:
        """Wait for running jobs and stop the worker (pending results not taken are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._items.clear()

    def __enter__(self) -> EvalQueue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
