"""One seam for per-patient work: a function mapped over patients, locally or on Dask.

Every per-patient step (scan, check, preprocess, cache) is a pure function of one
item (a manifest row, a source) returning a record. :func:`map_patients` and
:func:`iter_patients` run such a function over a cohort and own what every caller
would otherwise repeat: the progress bar, the order of the results, what a failure
of one item does, worker processes that die, and the main-guard rule of
:mod:`medmulti._processes`.

Two executors, the scheduling left to them:

``"local"`` (the default)
    A :class:`~medmulti._processes.WorkerPool` of ``workers`` processes on this
    machine (``start_method`` ``"spawn"``, ``"fork"``, ``"forkserver"`` or
    ``"default"``). ``workers`` of 0 or 1, a single item, or a main script without an
    ``if __name__ == "__main__":`` guard (whose code spawned workers would run again)
    run the items in this process instead, the last with a warning.
``"dask"``
    A :class:`dask.distributed.Client`: the one passed as ``executor``, one connected
    to ``scheduler`` (an address such as ``"tcp://10.0.0.5:8786"`` or a scheduler
    file), or, with neither, a ``LocalCluster`` of ``workers`` single-threaded
    processes on the loopback interface, closed again at the end. Needs the
    ``dask`` extra (``pip install 'medmulti[dask]'``).

Failures. An exception raised by ``fn`` for one item is that item's outcome: with
``on_error="raise"`` (the default) the first one to arrive is raised in the caller
and the remaining work is cancelled; with ``on_error="return"`` it comes back as
:attr:`Outcome.error` and every other item still runs, because a per-patient fault
is data, not a crash. Exceptions travel back from worker processes by pickle:
medmulti's errors keep their type and fields; one that does not survive pickling
becomes an :class:`~medmulti.errors.ExecutorError` naming its type. A worker
*process* that dies (killed, out of memory, a crash in native code) loses no item:
Dask reschedules its tasks on other workers; the local pool is replaced, with a
warning, by fresh processes that run the unfinished items one at a time each, so
that a further death is pinned on one item. An item whose worker dies every time it
runs (:data:`LOCAL_RETRIES` more times locally, ``distributed.scheduler.allowed-failures``
on Dask) gets an :class:`~medmulti.errors.ExecutorError` as its outcome.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import pickle
import re
import threading
import traceback
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Generic, Iterable, Iterator, Literal, Sequence, TypeVar, cast, overload

from ._processes import WorkerPool, workers_allowed
from .errors import ExecutorError

__all__ = [
    "EXECUTORS",
    "START_METHODS",
    "ON_ERROR",
    "LOCAL_RETRIES",
    "DASK_HINT",
    "Outcome",
    "iter_patients",
    "map_patients",
]

log = logging.getLogger("medmulti")

T = TypeVar("T")
R = TypeVar("R")

#: The executors :func:`map_patients` offers by name (a ``dask.distributed.Client`` is also accepted).
EXECUTORS = ("local", "dask")
#: Start methods of the local pool; ``"default"`` is multiprocessing's current default.
START_METHODS = ("spawn", "fork", "forkserver", "default")
#: What an exception raised by ``fn`` for one item does.
ON_ERROR = ("raise", "return")
#: After a local pool broke, each unfinished item runs in a process of its own; one whose
#: process dies there too runs again, in a fresh process, up to this many times: four runs
#: in all (the pool's, its own, two more), as Dask's default ``allowed-failures`` of 3 allows.
LOCAL_RETRIES = 2
#: How to install what ``executor="dask"`` needs.
DASK_HINT = "pip install 'medmulti[dask]'"

_MAX_CHUNK = 32  # items per task at most when chunksize is automatic
_PROBE_TIMEOUT_S = 120.0
_ADDRESS = re.compile(r"^[a-z][a-z0-9+]*://\S+$|^[^\s/:]+:\d+$")


@dataclasses.dataclass(frozen=True)
class Outcome(Generic[R]):
    """What one item came to: the function's value, or the exception it raised.

    Attributes
    ----------
    index : int
        The item's position in the input.
    value : object
        What ``fn`` returned (``None`` when it raised).
    error : Exception or None
        What ``fn`` raised for this item, as raised (after the trip back from a
        worker process, when it ran in one); or an :class:`~medmulti.errors.ExecutorError`
        when the item could not be run (its worker process died every time).
    """

    index: int
    value: R | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when ``fn`` returned a value for this item."""
        return self.error is None

    def result(self) -> R:
        """Return the value, or raise the item's error.

        Returns
        -------
        object
            What ``fn`` returned.

        Raises
        ------
        Exception
            The item's :attr:`error`, when there is one.
        """
        if self.error is not None:
            raise self.error
        return cast(R, self.value)


# -- what runs in a worker ---------------------------------------------------------------
class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, shown as its cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


_Result = tuple[int, bool, Any, "str | None"]  # (index, ok, value or exception, worker traceback)

_INITIALIZED: set[Any] = set()
_INIT_LOCK = threading.Lock()


def _ensure_initialized(initializer: Callable[[], Any]) -> None:
    """Run ``initializer`` once in this worker process (Dask has no pool initializer)."""
    with _INIT_LOCK:
        if initializer in _INITIALIZED:
            return
        initializer()
        _INITIALIZED.add(initializer)


def _sendable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling, else an ExecutorError naming its type."""
    try:
        back = pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure means it cannot travel
        back = None
    if isinstance(back, Exception):
        return exc
    return ExecutorError(f"the function raised {type(exc).__name__}, which cannot be sent back from a worker "
                         "process (it does not survive pickling)",
                         hint="raise a medmulti error, or an exception whose arguments pickle")


def _run_chunk(fn: Callable[[Any], Any], pairs: list[tuple[int, Any]],
               initializer: Callable[[], Any] | None = None) -> list[_Result]:
    """Run ``fn`` on each ``(index, item)``; an exception is that item's result (a worker task)."""
    if initializer is not None:
        _ensure_initialized(initializer)
    out: list[_Result] = []
    for index, item in pairs:
        try:
            out.append((index, True, fn(item), None))
        except Exception as exc:  # noqa: BLE001 - a per-item fault is data: send it back
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            out.append((index, False, _sendable(exc), f'\n"""\n{text}"""'))
    return out


def _outcome(result: _Result) -> Outcome[Any]:
    index, ok, value, text = result
    if ok:
        return Outcome(index, value=value)
    if text and value.__cause__ is None:
        value.__cause__ = _RemoteTraceback(text)
    return Outcome(index, error=value)


def _lost(index: int, unit: str, tries: str) -> Outcome[Any]:
    return Outcome(index, error=ExecutorError(
        f"the worker process died each time it ran this {unit} ({tries}): killed, out of memory, "
        "or a crash in native code",
        hint=f"run this {unit} alone in one process (workers=1) to see the crash, or look for a process "
             "killed for memory in the system log"))


def _failed_task(indices: Iterable[int], exc: BaseException, unit: str) -> list[Outcome[Any]]:
    """A task failed outside ``fn`` (its result or ``fn`` itself could not travel): each item's outcome."""
    return [Outcome(i, error=ExecutorError(
        f"the task running this {unit} failed outside the per-{unit} function ({type(exc).__name__})",
        hint="the workers need the same Python packages as this program, and fn, its items and its "
             "results must pickle")) for i in indices]


def _in_process(fn: Callable[[Any], Any], items: Sequence[Any], indices: Iterable[int]) -> Iterator[Outcome[Any]]:
    for i in indices:
        try:
            value = fn(items[i])
        except Exception as exc:  # noqa: BLE001 - the item's outcome
            yield Outcome(i, error=exc)
        else:
            yield Outcome(i, value=value)


def _chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[k:k + size]) for k in range(0, len(indices), size)]


def _auto_chunksize(n: int, slots: int) -> int:
    """Items per task: about eight tasks per worker, at most 32 items each."""
    return max(1, min(_MAX_CHUNK, n // (max(1, slots) * 8)))


# -- the local executor --------------------------------------------------------------------
def _mp_context(start_method: str) -> Any:
    return None if start_method == "default" else multiprocessing.get_context(start_method)


def _bootstrapping() -> bool:
    """True in a spawned child that is still importing the parent's main module."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _is_broken(fut: Future[Any]) -> bool:
    return not fut.cancelled() and isinstance(fut.exception(), BrokenProcessPool)


def _task_outcomes(fut: Future[list[_Result]], chunk: list[int], unit: str) -> list[Outcome[Any]]:
    """The outcomes of a finished task that did not lose its worker."""
    try:
        return [_outcome(r) for r in fut.result()]
    except Exception as exc:  # noqa: BLE001 - fn, an item or a result that could not travel
        return _failed_task(chunk, exc, unit)


def _processes_work(ctx: Any, initializer: Callable[[], Any] | None) -> bool:
    """Can one worker process start here and run a task at all?"""
    try:
        with WorkerPool(1, mp_context=ctx, initializer=initializer) as pool:
            pool.submit(os.getpid).result(timeout=_PROBE_TIMEOUT_S)
        return True
    except Exception:  # noqa: BLE001 - any failure: no
        return False


def _local(fn: Callable[[Any], Any], items: Sequence[Any], *, workers: int, what: str, unit: str,
           start_method: str, initializer: Callable[[], Any] | None,
           chunksize: int | None) -> Iterator[Outcome[Any]]:
    n = len(items)
    if workers <= 1 or n < 2 or not workers_allowed(what, start_method):
        yield from _in_process(fn, items, range(n))
        return
    try:
        pickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001 - a lambda, a local function, a bound method of a lock...
        raise ExecutorError(f"the per-{unit} function cannot be sent to worker processes ({type(exc).__name__})",
                            hint="use a function defined at module level, or a functools.partial of one") from None
    ctx = _mp_context(start_method)
    unfinished = set(range(n))
    finished_any = False
    broken = False
    start_error: BaseException | None = None
    with WorkerPool(workers, mp_context=ctx, initializer=initializer) as pool:
        futures: dict[Future[list[_Result]], list[int]] = {}
        try:
            for chunk in _chunks(range(n), chunksize or _auto_chunksize(n, workers)):
                futures[pool.submit(_run_chunk, fn, [(i, items[i]) for i in chunk])] = chunk
        except BrokenProcessPool:
            broken = True  # a worker died while the rest was submitted
        except (RuntimeError, OSError) as exc:  # no process could start (EAGAIN, bootstrapping child)
            start_error = exc
        if start_error is None:
            for fut in as_completed(futures):
                if _is_broken(fut):
                    broken = True
                    break
                for outcome in _task_outcomes(fut, futures[fut], unit):
                    unfinished.discard(outcome.index)
                    yield outcome
                finished_any = True
            if broken:  # tasks that finished before the death still count
                for fut, chunk in futures.items():
                    if fut.done() and not fut.cancelled() and not _is_broken(fut) and any(i in unfinished for i in chunk):
                        for outcome in _task_outcomes(fut, chunk, unit):
                            unfinished.discard(outcome.index)
                            yield outcome
                        finished_any = True
    todo = sorted(unfinished)
    if start_error is not None:
        if _bootstrapping():
            raise start_error  # a spawned child importing an unguarded main module: let it fail
        log.warning("%s runs in this process: worker processes could not start (%s)", what,
                    type(start_error).__name__)
        yield from _in_process(fn, items, todo)
    elif broken and todo:
        if not finished_any and not _processes_work(ctx, initializer):
            log.warning("%s runs in this process: worker processes die before finishing any work (guard the "
                        "script's entry point with `if __name__ == \"__main__\":`)", what)
            yield from _in_process(fn, items, todo)
            return
        log.warning("a worker process died during %s (killed, out of memory, or a crash in native code); "
                    "the %d unfinished %ss run again in fresh processes, one at a time per process",
                    what, len(todo), unit)
        yield from _isolated(fn, items, todo, workers=workers, ctx=ctx, initializer=initializer, unit=unit)


def _isolated(fn: Callable[[Any], Any], items: Sequence[Any], todo: list[int], *, workers: int, ctx: Any,
              initializer: Callable[[], Any] | None, unit: str) -> Iterator[Outcome[Any]]:
    """Run ``todo`` on single-process pools, one item at a time each: a death names its item.

    A pool whose process died is replaced; its item runs again up to
    :data:`LOCAL_RETRIES` times, then gets an ExecutorError as its outcome.
    """
    queue = deque(todo)
    deaths: dict[int, int] = {}
    pools: list[WorkerPool | None] = [None] * min(workers, len(todo))
    free = list(range(len(pools)))
    running: dict[Future[list[_Result]], tuple[int, int]] = {}
    try:
        while queue or running:
            while queue and free:
                slot, i = free.pop(), queue.popleft()
                pool = pools[slot] or WorkerPool(1, mp_context=ctx, initializer=initializer)
                pools[slot] = pool
                running[pool.submit(_run_chunk, fn, [(i, items[i])])] = (slot, i)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                slot, i = running.pop(fut)
                free.append(slot)
                try:
                    outcomes = [_outcome(r) for r in fut.result()]
                except BrokenProcessPool:
                    dead = pools[slot]
                    if dead is not None:
                        dead.stop()
                    pools[slot] = None
                    deaths[i] = deaths.get(i, 0) + 1
                    if deaths[i] <= LOCAL_RETRIES:
                        queue.append(i)
                        continue
                    outcomes = [_lost(i, unit, f"{deaths[i] + 1} times")]
                except Exception as exc:  # noqa: BLE001
                    outcomes = _failed_task([i], exc, unit)
                yield from outcomes
    except BaseException:
        for left in pools:
            if left is not None:
                left.stop()
        raise
    for left in pools:
        if left is not None:
            left.shutdown(wait=True)


# -- the Dask executor ---------------------------------------------------------------------
def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ExecutorError("executor='dask' needs dask.distributed, which is not installed",
                            hint=DASK_HINT) from None
    return distributed


def _connect(distributed: Any, scheduler: str) -> Any:
    """A Client for a scheduler address or a scheduler file."""
    address = scheduler
    if not _ADDRESS.match(scheduler):
        address = _address_in_file(scheduler)
    try:
        return distributed.Client(address)  # waits up to distributed.comm.timeouts.connect
    except (OSError, TimeoutError, ValueError) as exc:
        raise ExecutorError(f"cannot reach the Dask scheduler at {address!r} ({type(exc).__name__})",
                            hint="check that `dask scheduler` runs there and that its port is open from this "
                                 "machine") from None


def _address_in_file(path: str) -> str:
    """The address a scheduler file (``dask scheduler --scheduler-file``) names.

    Read here rather than by the Client, which waits for a missing file forever.
    """
    import json

    hint = "start the scheduler with `dask scheduler --scheduler-file FILE`, or give its address (tcp://host:8786)"
    try:
        with open(path, encoding="utf-8") as fh:
            address = json.load(fh).get("address")
    except FileNotFoundError:
        raise ExecutorError("no Dask scheduler file (nor an address such as tcp://host:8786)", path=path,
                            hint=hint) from None
    except (OSError, ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise ExecutorError(f"cannot read the Dask scheduler file ({type(exc).__name__})", path=path,
                            hint=hint) from None
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise ExecutorError("the Dask scheduler file names no scheduler address", path=path, hint=hint)
    return address


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "work"


def _dask(fn: Callable[[Any], Any], items: Sequence[Any], *, client: Any, scheduler: str | None,
          workers: int | None, what: str, desc: str, unit: str, initializer: Callable[[], Any] | None,
          chunksize: int | None) -> Iterator[Outcome[Any]]:
    with contextlib.ExitStack() as quiet:
        yield from _dask_run(fn, items, client=client, scheduler=scheduler, workers=workers, what=what, desc=desc,
                             unit=unit, initializer=initializer, chunksize=chunksize, quiet=quiet)


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """Keep dask.distributed's INFO lines (cluster start and stop) off the terminal."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _dask_run(fn: Callable[[Any], Any], items: Sequence[Any], *, client: Any, scheduler: str | None,
              workers: int | None, what: str, desc: str, unit: str, initializer: Callable[[], Any] | None,
              chunksize: int | None, quiet: contextlib.ExitStack) -> Iterator[Outcome[Any]]:
    distributed = _distributed()
    n = len(items)
    cluster = None
    own = client is None
    if own:
        if scheduler is None:
            import dask

            method = str(dask.config.get("distributed.worker.multiprocessing-method", "spawn"))
            if not workers_allowed(what, method):  # a LocalCluster starts its workers like a pool
                yield from _in_process(fn, items, range(n))
                return
            quiet.enter_context(_quiet_distributed())  # its scheduler logs here, at INFO, on every start and stop
            cluster = distributed.LocalCluster(
                n_workers=max(1, workers or os.cpu_count() or 1), threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None)
            client = distributed.Client(cluster)
        else:
            client = _connect(distributed, scheduler)
    pending: dict[Any, list[int]] = {}
    prefix = f"medmulti-{_slug(desc or what)}-{uuid.uuid4().hex[:8]}"
    counter = iter(range(1 << 62))

    def submit(chunk: list[int]) -> Any:
        fut = client.submit(_run_chunk, fn, [(i, items[i]) for i in chunk], initializer,
                            key=f"{prefix}-{next(counter)}")
        pending[fut] = chunk
        return fut

    try:
        slots = sum(client.nthreads().values()) or 1
        ac = distributed.as_completed([submit(c) for c in _chunks(range(n), chunksize or _auto_chunksize(n, slots))])
        for fut in ac:
            chunk = pending.pop(fut)
            if fut.status == "finished":
                outcomes = [_outcome(r) for r in fut.result()]
            elif fut.status == "error":
                exc = fut.exception()
                if isinstance(exc, distributed.KilledWorker) and len(chunk) > 1:
                    for i in chunk:  # one of them killed its workers: find which, one item per task
                        ac.add(submit([i]))
                    fut.release()
                    continue
                if isinstance(exc, distributed.KilledWorker):
                    outcomes = [_lost(chunk[0], unit, "more often than distributed.scheduler.allowed-failures")]
                else:
                    outcomes = _failed_task(chunk, exc, unit)
            else:  # cancelled: the scheduler went away or someone cancelled our keys
                raise ExecutorError(f"the Dask scheduler lost the work ({fut.status}) before {what} finished",
                                    hint="check that the scheduler still runs and can reach its workers")
            fut.release()
            yield from outcomes
    finally:
        if pending:
            try:
                client.cancel(list(pending))
            except Exception:  # noqa: BLE001 - best effort: the client may be gone
                pass
        if own:
            client.close()
            if cluster is not None:
                cluster.close()


# -- the seam ---------------------------------------------------------------------------------
def iter_patients(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    executor: str | Any = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    on_error: Literal["raise", "return"] = "raise",
    progress: bool = True,
    desc: str = "",
    unit: str = "patient",
    leave: bool = True,
    what: str | None = None,
    start_method: Literal["spawn", "fork", "forkserver", "default"] = "spawn",
    initializer: Callable[[], Any] | None = None,
    chunksize: int | None = None,
) -> Iterator[Outcome[R]]:
    """Run ``fn`` on every item; yield each item's :class:`Outcome` as it completes.

    Parameters are those of :func:`map_patients`. Outcomes arrive in completion
    order (:attr:`Outcome.index` says which item); the progress bar counts them.
    Leaving the loop early (``break``, an exception) cancels the work not yet done
    and stops the workers.

    Yields
    ------
    Outcome
        One per item. With ``on_error="raise"`` a failed item's error is raised
        instead of yielded.

    Raises
    ------
    ExecutorError
        ``executor="dask"`` without dask installed, or a scheduler that cannot
        be reached.
    Exception
        With ``on_error="raise"``, the first error raised by ``fn`` to arrive.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if start_method not in START_METHODS:
        raise ValueError(f"start_method must be one of {START_METHODS}, got {start_method!r}")
    if chunksize is not None and int(chunksize) < 1:
        raise ValueError(f"chunksize must be at least 1, got {chunksize!r}")
    client = None
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS} or a dask.distributed.Client, got {executor!r}")
        if executor == "local" and scheduler is not None:
            raise ValueError("scheduler= needs executor='dask'")
    elif callable(getattr(executor, "submit", None)) and callable(getattr(executor, "nthreads", None)):
        if scheduler is not None:
            raise ValueError("give a dask.distributed.Client or a scheduler address, not both")
        client = executor
    else:
        raise TypeError(f"executor must be one of {EXECUTORS} or a dask.distributed.Client, "
                        f"got {type(executor).__name__}")
    todo = list(items)
    work = what or desc or "per-patient work"
    source: Iterator[Outcome[Any]]
    if client is not None or executor == "dask":
        _distributed()  # missing: say so now, not at the first item
        source = _dask(fn, todo, client=client, scheduler=scheduler, workers=workers, what=work, desc=desc,
                       unit=unit, initializer=initializer, chunksize=chunksize) if todo else iter(())
    else:
        n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
        source = _local(fn, todo, workers=min(n_workers, len(todo)), what=work, unit=unit,
                        start_method=start_method, initializer=initializer, chunksize=chunksize)
    return _with_progress(source, total=len(todo), on_error=on_error, progress=progress, desc=desc, unit=unit,
                          leave=leave)


def _with_progress(source: Iterator[Outcome[Any]], *, total: int, on_error: str, progress: bool, desc: str,
                   unit: str, leave: bool) -> Iterator[Outcome[Any]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc or None, unit=unit, disable=not progress, leave=leave)
    try:
        for outcome in source:
            bar.update(1)
            if outcome.error is not None and on_error == "raise":
                raise outcome.error
            yield outcome
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # cancels what is left and stops the workers when we leave early
        bar.close()


@overload
def map_patients(fn: Callable[[T], R], items: Iterable[T], *, executor: str | Any = ...,
                 scheduler: str | None = ..., workers: int | None = ..., on_error: Literal["raise"] = ...,
                 progress: bool = ..., desc: str = ..., unit: str = ..., leave: bool = ..., what: str | None = ...,
                 start_method: Literal["spawn", "fork", "forkserver", "default"] = ...,
                 initializer: Callable[[], Any] | None = ..., chunksize: int | None = ...) -> list[R]: ...


@overload
def map_patients(fn: Callable[[T], R], items: Iterable[T], *, executor: str | Any = ...,
                 scheduler: str | None = ..., workers: int | None = ..., on_error: Literal["return"],
                 progress: bool = ..., desc: str = ..., unit: str = ..., leave: bool = ..., what: str | None = ...,
                 start_method: Literal["spawn", "fork", "forkserver", "default"] = ...,
                 initializer: Callable[[], Any] | None = ..., chunksize: int | None = ...) -> list[Outcome[R]]: ...


def map_patients(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    executor: str | Any = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    on_error: Literal["raise", "return"] = "raise",
    progress: bool = True,
    desc: str = "",
    unit: str = "patient",
    leave: bool = True,
    what: str | None = None,
    start_method: Literal["spawn", "fork", "forkserver", "default"] = "spawn",
    initializer: Callable[[], Any] | None = None,
    chunksize: int | None = None,
) -> list[R] | list[Outcome[R]]:
    """Run ``fn`` on every item, in worker processes or on a Dask cluster; results in input order.

    Parameters
    ----------
    fn : callable
        One item in, one result out; pure (no global state it relies on). It and
        the items and results must pickle (a module-level function or a
        :func:`functools.partial` of one) unless the work stays in this process.
    items : iterable
        The items (manifest rows, sources, patient indices).
    executor : {"local", "dask"} or dask.distributed.Client
        Where the work runs (see the module notes). A Client passed in is used
        and left open.
    scheduler : str, optional
        With ``executor="dask"``: a scheduler address (``"tcp://host:8786"``) or
        a scheduler file (JSON, ``dask scheduler --scheduler-file``). Without one,
        a local cluster of ``workers`` processes is started and closed again.
    workers : int, optional
        Local worker processes (default: the CPU count; 0 or 1: this process),
        or the worker processes of the local Dask cluster. Ignored for a Client
        or a scheduler: the cluster has its own.
    on_error : {"raise", "return"}
        An exception ``fn`` raises for one item: ``"raise"`` raises the first
        to arrive and cancels the rest; ``"return"`` makes it that item's
        :class:`Outcome` and runs every other item.
    progress : bool
        Show a tqdm progress bar; it counts items as they complete, on this
        machine, for either executor.
    desc : str
        The bar's label (e.g. ``"validate"``).
    unit : str
        What an item is, for the bar and messages.
    leave : bool
        Keep the finished bar on the terminal.
    what : str, optional
        The work, for warnings (``"preprocessing runs in this process: ..."``);
        default ``desc``.
    start_method : {"spawn", "fork", "forkserver", "default"}
        How the local pool starts its processes. ``"spawn"`` (safe after
        TensorFlow or ITK started threads) imports the main module again, which
        needs the main-guard; ``"fork"`` does not.
    initializer : callable, optional
        Run once in each worker process before its first item (e.g. one ITK
        thread per process); never in this process. Must pickle.
    chunksize : int, optional
        Items per task (default: about eight tasks per worker, at most 32 items
        each). A task is what a dying worker loses and what the bar counts at once.

    Returns
    -------
    list
        ``on_error="raise"``: ``fn``'s results in the order of ``items``.
        ``on_error="return"``: one :class:`Outcome` per item, in that order.

    Raises
    ------
    ExecutorError
        ``executor="dask"`` without dask installed (hint: ``pip install
        'medmulti[dask]'``), or a scheduler that cannot be reached.
    Exception
        With ``on_error="raise"``, the first error ``fn`` raised (its type and
        fields kept across the worker boundary).

    Notes
    -----
    A worker process that dies loses no item: Dask reschedules its tasks; the
    local executor reruns the unfinished items in fresh processes, with a warning.
    An item that kills its worker every time gets an ``ExecutorError`` as its
    outcome (``on_error="return"``) or raises it.

    Examples
    --------
    >>> map_patients(abs, [-3, 1, -2], workers=1, progress=False)
    [3, 1, 2]
    >>> [o.ok for o in map_patients(int, ["7", "x"], workers=1, progress=False, on_error="return")]
    [True, False]
    """
    todo = list(items)
    got: list[Outcome[R] | None] = [None] * len(todo)
    for outcome in iter_patients(fn, todo, executor=executor, scheduler=scheduler, workers=workers,
                                 on_error=on_error, progress=progress, desc=desc, unit=unit, leave=leave, what=what,
                                 start_method=start_method, initializer=initializer, chunksize=chunksize):
        got[outcome.index] = outcome
    outcomes = cast(list[Outcome[R]], got)
    if on_error == "return":
        return outcomes
    return [o.result() for o in outcomes]
