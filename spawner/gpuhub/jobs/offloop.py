"""CPU-bound work (a notebook's conversion) off the service's event loop.

Each call runs in a child process of its own, forked from a ``forkserver`` that has the
heavy modules imported once: a pure-Python conversion in a thread would hold the GIL and
stall every other user's request, and a child can be killed when it runs too long.  At
most ``workers`` calls run at once; the rest wait their turn.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from ..errors import OptionError

T = TypeVar("T")

PRELOAD = ("gpuhub.jobs.policy", "nbformat", "nbconvert", "IPython.core.inputtransformer2")


def _child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...], kw: Any) -> None:
    """In the child: run ``fn`` and send back ``("ok", value)`` or the refusal's fields
    (an :class:`OptionError` is rebuilt in the parent; anything else is a crash)."""
    try:
        conn.send(("ok", fn(*args, **kw)))
    except OptionError as e:
        conn.send(("option", (e.field, e.problem)))
    except BaseException as e:  # reported to the parent, which answers 500
        conn.send(("crash", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


class ProcessRunner:
    """Run picklable pure functions in killable child processes, ``workers`` at a time,
    each stopped after ``time_limit`` seconds."""

    def __init__(self, workers: int, time_limit: float, preload: Sequence[str] = PRELOAD):
        self.time_limit = time_limit
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(list(preload))
        # each thread only waits on its child's pipe: the number of threads is the bound
        self._waiters = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpuhub-off")

    async def run(self, field: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` in a child process.  Its :class:`OptionError` is raised
        here; past the time limit the child is killed and an :class:`OptionError` names
        ``field``."""
        loop = asyncio.get_running_loop()
        kind, value = await loop.run_in_executor(self._waiters, self._call, fn, args, kw)
        if kind == "ok":
            return value  # type: ignore[no-any-return]
        if kind == "option":
            raise OptionError(*value)
        if kind == "timeout":
            raise OptionError(
                field,
                f"took longer than {self.time_limit:g} s to process and was stopped; "
                "make it smaller (fewer or shorter cells)",
            )
        raise RuntimeError(f"{field}: processing failed in its worker process: {value}")

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kw: Any) -> tuple[str, Any]:
        """Blocking (in a waiter thread): start the child, wait for its answer or the time
        limit, and make sure it is gone."""
        parent, child = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=_child, args=(child, fn, args, kw), daemon=True)
        try:
            proc.start()
            child.close()
            if not parent.poll(self.time_limit):
                return ("timeout", None)
            try:
                answer: tuple[str, Any] = parent.recv()
            except EOFError:
                return ("crash", f"the worker process ended ({proc.exitcode})")
            return answer
        finally:
            if proc.pid is not None:  # started
                if proc.is_alive():
                    proc.kill()
                proc.join()
                proc.close()
            parent.close()
            child.close()

    def shutdown(self) -> None:
        """Stop waiting for new work (children in flight end by their time limit)."""
        self._waiters.shutdown(wait=False, cancel_futures=True)
