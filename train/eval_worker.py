"""A worker process for evaluation jobs: the per-epoch k-means off the training process's GIL.

:class:`ProcessWorker` starts one child interpreter (``sys.executable``) and runs picklable jobs
``fn(*args)`` there, one after the other, handing each result back through a
:class:`concurrent.futures.Future`. The child is started with ``python -c`` and a small bootstrap
(not :mod:`multiprocessing`'s spawn), so a user's script without an ``if __name__ == "__main__"``
guard is never re-run in it; it takes the parent's ``sys.path`` and torch intra-op thread count,
so the same job gives the same bits in either process.

Jobs and results travel as pickles over the child's stdin / stdout (the child moves its own
``print`` output to stderr, so only the protocol uses stdout). A job's exception is raised from its
future. If the child dies (killed, out of memory), a warning names its exit code and its jobs
stay queued here, for the caller to run itself (:meth:`ProcessWorker.run_one_here`): a job is a
pure function of its arguments, so the result is the same. The child ends when the parent closes
its stdin, also when the parent is killed (the pipe closes).
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_BOOT = ("import pickle, sys; h = pickle.load(sys.stdin.buffer); sys.path[:] = h['sys_path']; "
         "from train.eval_worker import serve; serve(h)")


class ProcessWorker:
    """One child process running ``fn(*args)`` jobs in submission order (see the module doc).

    Jobs wait in this process and go to the child one at a time, so a job the child has not
    started can still be run here instead (:meth:`run_one_here`): a caller that would otherwise
    wait, or whose worker has fallen behind, takes the oldest such job itself."""

    def __init__(self, threads: int | None = None) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: BinaryIO = self._proc.stdin
        self._lock = threading.Lock()
        self._waiting: deque[tuple[int, Callable[..., Any], tuple[Any, ...], Future[Any]]] = deque()
        self._sent: dict[int, tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = {}
        self._next = 0
        self._closing = False
        self.dead = False  # the child has gone: every job is the caller's (run_one_here)
        self._send({"sys_path": list(sys.path), "threads": threads})
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), name="mixbench-eval-reader",
                                        daemon=True)
        self._reader.start()

    def _send(self, obj: Any) -> None:
        pickle.dump(obj, self._stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self._stdin.flush()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``fn(*args)`` (both picklable: a module-level function, plain data)."""
        fut: Future[Any] = Future()
        with self._lock:
            self._waiting.append((self._next, fn, args, fut))
            self._next += 1
            self._feed()
        return fut

    @property
    def backlog(self) -> int:
        """Jobs queued that the child has not started."""
        return len(self._waiting)

    def run_one_here(self) -> bool:
        """Run the oldest job the child has not started in the calling thread; False if none."""
        with self._lock:
            if not self._waiting:
                return False
            _, fn, args, fut = self._waiting.popleft()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - raised from the future, as the child's would be
            fut.set_exception(exc)
        return True

    def _feed(self) -> None:
        """Send the next waiting job when the child is idle (called with the lock held)."""
        if self._sent or not self._waiting or self._closing or self.dead:
            return
        job_id, fn, args, fut = self._waiting.popleft()
        try:
            data = pickle.dumps((job_id, fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an unpicklable job: its own error, the others go on
            fut.set_exception(exc)
            self._feed()
            return
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._waiting.appendleft((job_id, fn, args, fut))
            return  # the child has gone; the reader sees its end and marks it dead
        self._sent[job_id] = (fn, args, fut)

    def _read(self, out: BinaryIO) -> None:
        while True:
            try:
                job_id, ok, value = pickle.load(out)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            with self._lock:
                _, _, fut = self._sent.pop(job_id)
                self._feed()
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        rc = self._proc.wait()
        with self._lock:
            self.dead = True
            unfinished = [(i, fn, args, fut) for i, (fn, args, fut) in self._sent.items()]
            self._sent.clear()
            self._waiting.extendleft(reversed(unfinished))
            if not self._closing:
                log.warning("the evaluation worker process (pid %d) ended with exit code %s; its %d unfinished "
                            "job(s) run in the training process instead (same results; its stderr above may say "
                            "why)", self._proc.pid, rc, len(self._waiting))

    def close(self, cancel: bool = False) -> None:
        """Run the jobs the child has not started here (``cancel``: drop them), let it finish its
        current one, and stop it."""
        while not cancel and self.run_one_here():
            pass
        with self._lock:
            self._closing = True
            for *_, fut in self._waiting:
                fut.cancel()
            self._waiting.clear()
        try:
            self._stdin.close()
        except OSError:
            pass
        self._reader.join()

    def __enter__(self) -> ProcessWorker:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(cancel=exc_type is not None)


def serve(header: dict[str, Any]) -> None:
    """The child's loop: read ``(id, fn, args)`` from stdin until it closes, answer each on stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr; stdout carries only the answers
    sys.stdout = sys.stderr
    threads = header.get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    inp = sys.stdin.buffer
    while True:
        try:
            job_id, fn, args = pickle.load(inp)
        except EOFError:
            break
        try:
            answer: tuple[int, bool, Any] = (job_id, True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent's future
            answer = (job_id, False, exc)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an unpicklable result or exception: send its traceback text
            text = traceback.format_exc() if answer[1] else "".join(traceback.format_exception(answer[2]))
            data = pickle.dumps((job_id, False, RuntimeError(f"evaluation job {job_id} failed in the worker:\n{text}")))
        out.write(data)
        out.flush()
    out.close()
