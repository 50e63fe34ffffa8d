"""One Ctrl-C stops ``medmulti validate`` / ``preprocess --workers 2``: exit 130, one line.

Each case starts the command as a user does (``python -m medmulti.cli ...`` in its own
process group, like a terminal's foreground job), waits until a worker process exists,
sends SIGINT to the whole group (what Ctrl-C does) or to the parent alone, and checks:
exit status 130 within :data:`EXIT_WITHIN_S`, stderr exactly
``medmulti COMMAND: interrupted`` (no worker traceback), and no process started by
the command left alive. Before the fix, workers inherited Python's SIGINT handler: one
interrupted while waiting on the pool's call queue died holding its lock and the
others blocked on it forever (2 of 8 trials hung), a second Ctrl-C printed a
traceback, and spawn workers interrupted while importing printed theirs.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")

EXIT_WITHIN_S = 30.0
#: copies of each fault-free sample patient in the manifest, so a run lasts seconds, not a blink
COPIES = 60
MARKER = "MEDMULTI_INTERRUPT_TEST"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The 12-patient sample cohort and a manifest repeating its fault-free patients."""
    from medmulti import make_sample_cohort

    root = tmp_path_factory.mktemp("interrupt")
    c = make_sample_cohort(root / "cohort", n_patients=12, seed=0, progress=False)
    faulty = {f["patient_id"] for f in json.loads(c.faults.read_text())}
    lines = c.manifest.read_text().splitlines()
    comments = [ln for ln in lines if ln.startswith("#")]
    table = list(csv.reader(ln for ln in lines if not ln.startswith("#")))
    header, rows = table[0], [r for r in table[1:] if r and r[0] not in faulty]
    assert len(rows) >= 4
    big = c.root / "many.csv"
    with open(big, "w", newline="") as fh:
        fh.write("".join(ln + "\n" for ln in comments))
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for k in range(COPIES):
            w.writerows([f"{r[0]}C{k:02d}", *r[1:]] for r in rows)
    return c, big


def _proc_field(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    stat = _proc_field(pid, "stat")
    return bool(stat) and stat.rsplit(b")", 1)[-1].split()[0] != b"Z"


def _marked(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (the command and all it started)."""
    key = f"{MARKER}={marker}".encode()
    return [int(d) for d in os.listdir("/proc")
            if d.isdigit() and key in _proc_field(int(d), "environ").split(b"\0") and _alive(int(d))]


def _workers(pid: int) -> list[int]:
    """Child processes of ``pid`` that are pool workers (not multiprocessing's resource tracker)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        stat = _proc_field(int(d), "stat")
        if stat and int(stat.rsplit(b")", 1)[-1].split()[1]) == pid and _alive(int(d)) \
                and b"resource_tracker" not in _proc_field(int(d), "cmdline"):
            out.append(int(d))
    return out


def _command(kind: str, cohort, tmp_path: Path) -> list[str]:
    c, manifest = cohort
    cmd = [sys.executable, "-m", "medmulti.cli", kind, str(manifest), "--spec", str(c.spec), "--workers", "2",
           "--no-progress"]
    if kind == "validate":
        return cmd + ["--deep"]
    return cmd + ["--cache", str(tmp_path / "cache")]


def _interrupt(cmd: list[str], *, delay_s: float, group: bool = True, second_after_s: float | None = None,
               ) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Run ``cmd``, Ctrl-C it ``delay_s`` after its first worker appears; return the result and the leftovers."""
    marker = uuid.uuid4().hex
    env = dict(os.environ, **{MARKER: marker})
    # its own process group, like a terminal's job; SIGINT at its default even when this test runs where it
    # is ignored (a background job of a script), so that the command's Python installs its Ctrl-C handler
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        t0 = time.monotonic()
        while not _workers(proc.pid):
            assert proc.poll() is None, f"ended before any worker started: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() - t0 < 60, "no worker process after 60 s"
            time.sleep(0.005)
        time.sleep(delay_s)
        assert proc.poll() is None, "the command finished before the interrupt: make the workload longer"
        send = (lambda: os.killpg(proc.pid, signal.SIGINT)) if group else (lambda: os.kill(proc.pid, signal.SIGINT))
        send()
        if second_after_s is not None:
            time.sleep(second_after_s)
            try:
                send()
            except ProcessLookupError:  # already gone: nothing to interrupt twice
                pass
        try:
            out, err = proc.communicate(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_WITHIN_S:.0f} s after Ctrl-C (deadlock)")
        leftovers = _marked(marker)
        deadline = time.monotonic() + 5.0  # multiprocessing's helpers see the parent's end and exit
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.05)
            leftovers = _marked(marker)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err), leftovers
    finally:
        for pid in _marked(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _assert_clean_interrupt(kind: str, res: subprocess.CompletedProcess, leftovers: list[int]) -> None:
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.stderr.strip().splitlines() == [f"medmulti {kind}: interrupted"], res.stderr[-3000:]
    assert res.returncode == 130, (res.returncode, res.stderr[-2000:])
    assert leftovers == [], f"processes left alive after the command exited: {leftovers}"


# 0: the first worker has just been started (spawn workers are still importing);
# then while the workers are busy with patients
@pytest.mark.parametrize("delay_s", [0.0, 0.4, 1.2], ids=["starting", "working", "later"])
@pytest.mark.parametrize("kind", ["validate", "preprocess"])
def test_one_ctrl_c_stops_workers_and_exits_130(cohort, tmp_path, kind, delay_s):
    res, leftovers = _interrupt(_command(kind, cohort, tmp_path), delay_s=delay_s)
    _assert_clean_interrupt(kind, res, leftovers)


@pytest.mark.parametrize("kind", ["validate", "preprocess"])
def test_second_ctrl_c_during_shutdown_prints_no_traceback(cohort, tmp_path, kind):
    res, leftovers = _interrupt(_command(kind, cohort, tmp_path), delay_s=0.3, second_after_s=0.02)
    _assert_clean_interrupt(kind, res, leftovers)


def test_interrupt_sent_to_the_parent_alone(cohort, tmp_path):
    """``kill -INT PID`` (no terminal): the workers never see a signal, the parent still stops them."""
    res, leftovers = _interrupt(_command("validate", cohort, tmp_path), delay_s=0.3, group=False)
    _assert_clean_interrupt("validate", res, leftovers)


def test_worker_pool_workers_ignore_sigint_and_stop_reaps_them():
    """The library seam: WorkerPool's workers ignore SIGINT; stop() leaves no live worker."""
    import multiprocessing as mp

    from medmulti._processes import WorkerPool

    for method in ("fork", "spawn"):
        pool = WorkerPool(2, mp_context=mp.get_context(method))
        try:
            handlers = set(pool.map(signal.getsignal, [signal.SIGINT] * 4))
            assert handlers == {signal.SIG_IGN}, (method, handlers)
            procs = list(pool._processes.values())
            assert procs
        finally:
            pool.stop()
        assert pool.stopped and not any(p.is_alive() for p in procs), method
