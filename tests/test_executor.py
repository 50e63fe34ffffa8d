"""The one seam for per-patient work: local processes and a real Dask cluster give the same
ordered results, per-item faults come back as outcomes with their fields, worker deaths lose
nothing, the progress bar reaches the total, and the main-guard rule holds."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import multiprocessing
import os
import sys

import pytest
from medmulti_testing.executor_tasks import (
    NeedsTwoArguments,
    always_die_on_two,
    die_once,
    fault_on_odd,
    initialized_here,
    mark_initialized,
    pid_of,
    square,
    unpicklable_fault,
)

from medmulti import executor as ex
from medmulti.errors import CorruptFileError, ExecutorError, MedmultiError
from medmulti.executor import Outcome, iter_patients, map_patients

HAVE_DASK = importlib.util.find_spec("distributed") is not None
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="the dask extra is not installed (`make test` installs it)")

ITEMS = list(range(23))


def pool_children() -> list:
    """Live worker processes of local pools (not the Dask cluster's, which persist across tests)."""
    return [p for p in multiprocessing.active_children() if not p.name.startswith("Dask")]


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    """A real two-worker cluster on the loopback interface, no dashboard, shared by this module.

    ``allowed-failures`` is 1 (Dask's default is 3) so that an item killing its workers is
    given up after two deaths rather than four: the test stays short, the rule is the same.
    ``worker-saturation`` 1.0 gives each worker only the task it runs, so that a death is
    counted against that task alone (Dask's default sends a second one ahead).
    """
    distributed = pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None)
        c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(params=["local", "dask"])
def where(request):
    """Keyword arguments that choose an executor: a local pool of 2, or the module's cluster."""
    if request.param == "local":
        return {"executor": "local", "workers": 2}
    return {"executor": request.getfixturevalue("client")}


class RecordingBar:
    """Stands in for tqdm: records the total, the updates and whether it was closed."""

    made: list["RecordingBar"] = []

    def __init__(self, *args, total=None, **kwargs):
        self.total, self.n, self.closed, self.kwargs = total, 0, False, kwargs
        RecordingBar.made.append(self)

    def update(self, n=1):
        self.n += n

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    import tqdm.auto

    RecordingBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    return RecordingBar.made


# -- the main-guard rule ---------------------------------------------------------------------
@pytest.fixture
def unguarded_main(tmp_path, monkeypatch):
    script = tmp_path / "unguarded.py"
    script.write_text("from medmulti.executor import map_patients\nprint(map_patients(abs, [-1, 2]))\n")
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(script), raising=False)
    return script


@pytest.mark.parametrize("executor", ["local", pytest.param("dask", marks=needs_dask)])
def test_an_unguarded_main_script_keeps_the_work_in_this_process(unguarded_main, caplog, executor):
    what = f"guard test ({executor})"
    with caplog.at_level(logging.WARNING, logger="medmulti"):
        got = map_patients(pid_of, ITEMS, executor=executor, workers=2, what=what, progress=False)
    assert set(got) == {os.getpid()}
    assert f"{what} runs in this process" in caplog.text


def test_fork_needs_no_guard(unguarded_main):
    got = map_patients(pid_of, ITEMS, workers=2, start_method="fork", what="fork guard test", progress=False)
    assert os.getpid() not in got


# -- the executor that owns its cluster: first, before the module's cluster starts --------
@needs_dask
def test_dask_without_an_address_starts_a_local_cluster_and_closes_it():
    import psutil

    def children() -> set[int]:
        return {p.pid for p in psutil.Process().children(recursive=True)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in p.cmdline()[-1]}

    before = children()
    got = map_patients(pid_of, ITEMS, executor="dask", workers=2, chunksize=1, progress=False)
    assert os.getpid() not in got and 1 <= len(set(got)) <= 2  # worker processes of its own
    assert children() <= before  # closed again: none of its processes outlives the call


# -- results -------------------------------------------------------------------------------
def test_in_process_local_pool_and_dask_give_the_same_ordered_results(client):
    expected = [square(x) for x in ITEMS]
    assert map_patients(square, ITEMS, workers=1, progress=False) == expected
    assert map_patients(square, ITEMS, workers=2, progress=False) == expected
    assert map_patients(square, ITEMS, workers=2, chunksize=5, progress=False) == expected
    assert map_patients(square, ITEMS, executor=client, progress=False) == expected
    assert map_patients(square, ITEMS, executor=client, chunksize=4, progress=False) == expected


def test_workers_run_elsewhere_and_one_worker_runs_here(client):
    assert set(map_patients(pid_of, ITEMS, workers=1, progress=False)) == {os.getpid()}
    assert os.getpid() not in map_patients(pid_of, ITEMS, workers=2, progress=False)
    dask_pids = set(map_patients(pid_of, ITEMS, executor=client, chunksize=1, progress=False))
    assert os.getpid() not in dask_pids
    assert dask_pids <= set(client.run(os.getpid).values())  # the cluster's worker processes


def test_iter_patients_yields_every_index_once_as_completed(where):
    outcomes = list(iter_patients(square, ITEMS, progress=False, **where))
    assert sorted(o.index for o in outcomes) == list(range(len(ITEMS)))
    assert all(o.ok and o.value == square(ITEMS[o.index]) for o in outcomes)


def test_no_items_is_an_empty_list(where):
    assert map_patients(square, [], progress=False, **where) == []


# -- per-item faults -------------------------------------------------------------------------
def test_a_fault_is_that_items_outcome_with_its_type_and_fields(where):
    outcomes = map_patients(fault_on_odd, ITEMS, on_error="return", progress=False, **where)
    assert [o.index for o in outcomes] == list(range(len(ITEMS)))
    for x, o in zip(ITEMS, outcomes):
        if x % 2 == 0:
            assert o.ok and o.result() == x * x
            continue
        try:
            fault_on_odd(x)
        except CorruptFileError as here:  # the same fault raised in this process is the oracle
            expected = here
        assert not o.ok and type(o.error) is CorruptFileError
        assert o.error.context() == expected.context()
        assert o.error.errno == 5 and str(o.error) == str(expected)
        with pytest.raises(CorruptFileError):
            o.result()


def test_on_error_raise_raises_an_items_own_error(where):
    with pytest.raises(CorruptFileError) as info:
        map_patients(fault_on_odd, ITEMS, progress=False, **where)
    assert info.value.patient_id in {f"P{x:03d}" for x in ITEMS if x % 2}
    assert info.value.modality == "ct" and info.value.keyword == "PixelData"


def test_the_worker_traceback_is_kept_as_the_cause():
    with pytest.raises(CorruptFileError) as info:
        map_patients(fault_on_odd, [0, 1], workers=2, progress=False)
    assert "fault_on_odd" in str(info.value.__cause__)  # where in the worker it was raised


def test_an_exception_that_does_not_survive_pickling_becomes_an_executor_error(where):
    outcomes = map_patients(unpicklable_fault, [0, 1, 2], on_error="return", progress=False, **where)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, ExecutorError) and "NeedsTwoArguments" in str(outcomes[1].error)


def test_a_function_that_cannot_reach_worker_processes_is_refused_at_once():
    with pytest.raises(ExecutorError, match="cannot be sent to worker processes"):
        map_patients(lambda x: x, ITEMS, workers=2, progress=False)
    assert map_patients(lambda x: x, ITEMS, workers=1, progress=False) == ITEMS  # nothing to send


def test_in_process_keeps_the_original_exception():
    outcomes = map_patients(unpicklable_fault, [0, 1], workers=1, on_error="return", progress=False)
    assert isinstance(outcomes[1].error, NeedsTwoArguments)


# -- worker deaths ---------------------------------------------------------------------------
def test_a_dask_worker_killed_mid_run_has_its_items_retried(client, tmp_path):
    marker = tmp_path / "died"
    jobs = [(x, str(marker)) for x in ITEMS]
    got = map_patients(die_once, jobs, executor=client, chunksize=2, progress=False)
    assert marker.exists()  # a worker did die on item 3
    assert got == [square(x) for x in ITEMS]  # and nothing was lost


def test_an_item_that_kills_every_dask_worker_is_given_up_alone(client):
    outcomes = map_patients(always_die_on_two, list(range(6)), executor=client, chunksize=3, on_error="return",
                            progress=False)
    assert [o.ok for o in outcomes] == [True, True, False, True, True, True]  # its chunk-mates were rerun
    assert isinstance(outcomes[2].error, ExecutorError) and "died" in str(outcomes[2].error)
    assert [o.value for o in outcomes if o.ok] == [square(x) for x in (0, 1, 3, 4, 5)]


def test_a_local_worker_killed_mid_run_has_its_items_rerun(tmp_path, caplog):
    marker = tmp_path / "died"
    jobs = [(x, str(marker)) for x in ITEMS]
    with caplog.at_level(logging.WARNING, logger="medmulti"):
        got = map_patients(die_once, jobs, workers=2, chunksize=2, progress=False, what="the death test")
    assert marker.exists()
    assert got == [square(x) for x in ITEMS]
    assert "a worker process died during the death test" in caplog.text
    assert not pool_children()  # the broken pool and the fresh ones are gone


def test_an_item_that_kills_every_local_worker_gets_an_executor_error(caplog):
    with caplog.at_level(logging.WARNING, logger="medmulti"):
        outcomes = map_patients(always_die_on_two, list(range(6)), workers=2, on_error="return", progress=False)
    assert [o.ok for o in outcomes] == [True, True, False, True, True, True]
    assert [o.value for o in outcomes if o.ok] == [square(x) for x in (0, 1, 3, 4, 5)]
    err = outcomes[2].error
    assert isinstance(err, ExecutorError) and f"{ex.LOCAL_RETRIES + 2} times" in str(err)
    assert not pool_children()


# -- progress --------------------------------------------------------------------------------
def test_the_progress_bar_counts_every_item_on_this_machine(where, bars):
    map_patients(fault_on_odd, ITEMS, on_error="return", desc="check", unit="patient", **where)
    (bar,) = bars
    assert bar.total == len(ITEMS) and bar.n == len(ITEMS) and bar.closed
    assert bar.kwargs["desc"] == "check" and bar.kwargs["unit"] == "patient"


def test_the_progress_bar_closes_when_an_error_is_raised(bars):
    with pytest.raises(CorruptFileError):
        map_patients(fault_on_odd, ITEMS, workers=2)
    assert bars[0].closed and bars[0].n >= 1


def test_leaving_iter_patients_early_stops_the_workers():
    for outcome in iter_patients(square, ITEMS, workers=2, chunksize=1, progress=False):
        break
    assert isinstance(outcome, Outcome)
    import gc

    gc.collect()  # the abandoned generator closes: its pool stops
    assert not pool_children()


def test_initializer_runs_in_each_worker_and_never_here(where):
    os.environ.pop("MEDMULTI_TEST_INITIALIZED", None)
    got = map_patients(initialized_here, ITEMS, initializer=mark_initialized, progress=False, **where)
    assert all(pid is not None and int(pid) != os.getpid() for pid in got)
    assert "MEDMULTI_TEST_INITIALIZED" not in os.environ


# -- set-up errors ----------------------------------------------------------------------------
def test_dask_not_installed_is_a_typed_error_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    with pytest.raises(ExecutorError) as info:
        map_patients(square, ITEMS, executor="dask")
    assert isinstance(info.value, MedmultiError) and info.value.hint == "pip install 'medmulti[dask]'"
    with pytest.raises(ExecutorError):
        iter_patients(square, ITEMS, executor="dask")  # said at the call, not at the first item


@needs_dask
def test_an_unreachable_scheduler_is_a_typed_error():
    import socket

    import dask

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ExecutorError, match="cannot reach the Dask scheduler"):
            map_patients(square, ITEMS, executor="dask", scheduler=f"tcp://127.0.0.1:{port}", progress=False)


def test_a_scheduler_file_or_address_connects_to_a_running_cluster(client, tmp_path):
    import json

    address = client.scheduler.address
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": address}))
    expected = [square(x) for x in ITEMS]
    for scheduler in (address, str(scheduler_file)):
        assert map_patients(square, ITEMS, executor="dask", scheduler=scheduler, progress=False) == expected
    assert len(client.run(os.getpid)) == 2  # our own Client was closed, the cluster left running


@needs_dask
def test_a_missing_or_empty_scheduler_file_is_a_typed_error_at_once(tmp_path):
    with pytest.raises(ExecutorError, match="no Dask scheduler file") as info:
        map_patients(square, ITEMS, executor="dask", scheduler=str(tmp_path / "scheduler.json"), progress=False)
    assert info.value.path == str(tmp_path / "scheduler.json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ExecutorError, match="names no scheduler address"):
        map_patients(square, ITEMS, executor="dask", scheduler=str(tmp_path / "empty.json"), progress=False)


@pytest.mark.parametrize("kwargs", [
    {"executor": "threads"},
    {"executor": "local", "scheduler": "tcp://127.0.0.1:8786"},
    {"on_error": "skip"},
    {"start_method": "thread"},
    {"chunksize": 0},
])
def test_bad_arguments_are_refused_at_the_call(kwargs):
    with pytest.raises(ValueError):
        iter_patients(square, ITEMS, **kwargs)


def test_an_object_that_is_not_a_client_is_refused():
    with pytest.raises(TypeError):
        map_patients(square, ITEMS, executor=object())


# -- the command line ----------------------------------------------------------------------
def _parse(argv):
    from medmulti.cli.arguments import add_executor_arguments, executor_options

    parser = argparse.ArgumentParser(prog="medmulti x")
    add_executor_arguments(parser)
    return executor_options(parser.parse_args(argv))


def test_cli_executor_options():
    from medmulti.cli.arguments import EXECUTOR_CHOICES

    assert EXECUTOR_CHOICES == ex.EXECUTORS
    assert _parse([]) == {"executor": "local", "scheduler": None}
    assert _parse(["--executor", "dask"]) == {"executor": "dask", "scheduler": None}
    assert _parse(["--scheduler", "tcp://10.0.0.5:8786"]) == {"executor": "dask", "scheduler": "tcp://10.0.0.5:8786"}
    assert _parse(["--scheduler", "/shared/scheduler.json", "--executor", "dask"])["scheduler"] == \
        "/shared/scheduler.json"


@pytest.mark.parametrize("argv", [
    ["--executor", "local", "--scheduler", "tcp://h:8786"],
    ["--scheduler", "tcp://h:8786", "--executor", "local"],
    ["--executor", "threads"],
    ["--scheduler", "tcp://h:8786 x"],
])
def test_cli_executor_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _parse(argv)
    assert info.value.code == 2


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(ex)
    assert result.attempted > 0 and result.failed == 0
