"""Whether worker processes may be started from this program.

With the ``spawn`` and ``forkserver`` start methods a worker imports the main
module again. A script without an ``if __name__ == "__main__":`` guard then runs
again, top to bottom, in every worker: it may regenerate, overwrite or delete the
very files the parent is working on, before the pool fails. medmulti's parallel
paths (cache fill, patient checks, JPEG 2000 decoding) therefore look at the main
module first and stay in the calling process when it is an unguarded script.

Every pool is a :class:`WorkerPool`, so that Ctrl-C reaches only the parent: workers
ignore SIGINT from the moment they start (no worker dies holding a queue lock, none
prints a traceback), and the parent stops and reaps them before the interrupt goes on.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import signal
import sys
import threading
import time
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterator, Literal

__all__ = ["main_is_guarded", "workers_allowed", "WorkerPool", "stop_pools", "exit_on_interrupt"]

log = logging.getLogger("medmulti")

_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]|['"]__main__['"]\s*==\s*__name__""")


@functools.lru_cache(maxsize=8)
def _file_is_guarded(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            source = fh.read()
    except OSError:
        return True  # cannot tell (frozen app, deleted file): let multiprocessing decide
    return bool(_GUARD.search(source))


def main_is_guarded() -> bool:
    """Return True when spawned workers can import the main module safely.

    Returns
    -------
    bool
        True for an interactive session, a notebook, ``python -c``, and a script
        or ``-m`` module whose source tests ``__name__ == "__main__"``; False for
        a script without that guard.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) if main is not None else None
    if not path:
        return True  # REPL, notebook, python -c: workers do not run it again
    return _file_is_guarded(str(path))


_warned: set[str] = set()


def workers_allowed(what: str, start_method: str = "spawn") -> bool:
    """Whether ``what`` may use worker processes; warns once per ``what`` when not.

    Parameters
    ----------
    what : str
        The work, for the message (e.g. ``"preprocessing"``).
    start_method : str
        The pool's start method; ``"default"`` means multiprocessing's current
        default. Forked workers do not import the main module again.

    Returns
    -------
    bool
        True for forked workers, else :func:`main_is_guarded`.
    """
    if start_method == "default":
        import multiprocessing as mp

        start_method = mp.get_start_method()
    if start_method == "fork" or main_is_guarded():
        return True
    if what not in _warned:
        _warned.add(what)
        log.warning("%s runs in this process: the main script has no `if __name__ == \"__main__\":` guard, and "
                    "worker processes would run the whole script again; add the guard to use all cores", what)
    return False


# -- Ctrl-C -------------------------------------------------------------------------
_HAVE_SIGMASK = hasattr(signal, "pthread_sigmask")
_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while worker processes are started; deliver it afterwards.

    SIGINT is blocked in this thread, so a worker started meanwhile (fork, or exec for
    spawn and forkserver) inherits the blocked signal and cannot be interrupted before
    :func:`_worker_init` ignores it; and an interrupt arriving meanwhile is only
    recorded, so that it is raised after the pool has registered the new process.
    """
    if not _in_main_thread():
        yield
        return
    got: list[int] = []
    old = signal.getsignal(signal.SIGINT)
    if old is not None:  # None: a handler installed outside Python, left alone
        signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if _HAVE_SIGMASK else None
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if old is not None:
            signal.signal(signal.SIGINT, old)
        if got:
            if callable(old):
                old(signal.SIGINT, None)  # Python's handler: raises KeyboardInterrupt here
            elif old == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C (a second one, while stopping workers) in the main thread."""
    if not _in_main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT)
    if old is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _worker_init(initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    """Worker start-up: Ctrl-C is the parent's business, then the pool's own initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _HAVE_SIGMASK:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked since the parent started us
    if initializer is not None:
        initializer(*initargs)


class WorkerPool(ProcessPoolExecutor):
    """A process pool that one Ctrl-C stops cleanly.

    Workers ignore SIGINT from their start (a terminal's Ctrl-C reaches the whole
    process group), so only the parent sees it. Leaving a ``with`` block by
    ``KeyboardInterrupt`` (or ``SystemExit``) calls :meth:`stop` before the interrupt
    goes on; leaving it by an ordinary exception cancels the tasks not yet started.
    Like any pool, it is for callers that checked :func:`workers_allowed`.

    Parameters
    ----------
    max_workers : int, optional
        Worker processes (default: the CPU count).
    mp_context : multiprocessing context, optional
        Start method (default: multiprocessing's default).
    initializer : callable, optional
        Called in each worker after SIGINT is ignored; must be picklable.
    initargs : tuple
        Its arguments.

    Examples
    --------
    >>> with WorkerPool(2) as pool:  # doctest: +SKIP
    ...     squares = list(pool.map(abs, [-1, -2, -3]))
    """

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()) -> None:
        super().__init__(max_workers, mp_context=mp_context, initializer=_worker_init,
                         initargs=(initializer, tuple(initargs)))
        self.stopped = False
        _POOLS.add(self)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        # workers are started inside submit (all at once for fork, on demand otherwise)
        with _sigint_deferred():
            return super().submit(fn, *args, **kwargs)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.stop()
            return False
        try:
            self.shutdown(wait=True, cancel_futures=exc_type is not None)
        except BaseException:  # Ctrl-C while waiting for the last tasks
            self.stop()
            raise
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel pending tasks, terminate the workers and reap them; Ctrl-C is ignored meanwhile.

        Parameters
        ----------
        timeout : float
            Seconds to wait for terminated workers before killing them.
        """
        with _sigint_ignored():
            processes = list((getattr(self, "_processes", None) or {}).values())
            manager = getattr(self, "_executor_manager_thread", None)
            self.stopped = True
            self.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                with contextlib.suppress(Exception):
                    p.terminate()
            deadline = time.monotonic() + timeout
            for p in processes:
                with contextlib.suppress(Exception):
                    p.join(max(0.0, deadline - time.monotonic()))
            for p in processes:
                with contextlib.suppress(Exception):
                    if p.is_alive():
                        p.kill()
                        p.join(1.0)
            if manager is not None and manager is not threading.current_thread():
                manager.join(max(0.5, deadline - time.monotonic()))  # the pool's own clean-up


def stop_pools() -> None:
    """Stop every live :class:`WorkerPool` of this process (the CLI's Ctrl-C handler)."""
    for pool in list(_POOLS):
        if not pool.stopped:
            pool.stop()


def exit_on_interrupt() -> None:
    """A program about to exit on Ctrl-C: ignore any further Ctrl-C, stop every pool.

    For the ``medmulti`` command's handler of ``KeyboardInterrupt`` only: a second
    Ctrl-C while it prints its line and the interpreter shuts down is ignored
    (no traceback), and no worker outlives the command.
    """
    if _in_main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_pools()
