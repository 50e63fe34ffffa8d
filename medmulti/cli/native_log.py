"""Keep TensorFlow's native start-up lines off the terminal of a ``medmulti`` command.

TensorFlow >= 2.20 logs through absl before ``absl::InitializeLog()`` runs, and those
lines ("oneDNN custom operations are on", "Could not find cuda drivers", "failed call
to cuInit", the CPU-feature notice) go straight to file descriptor 2, ignoring
``TF_CPP_MIN_LOG_LEVEL``. :class:`NativeLogFilter` puts a pipe in front of descriptor 2
for the life of a command and forwards everything except lines in absl's native format;
Python's own output (warnings, medmulti's log lines, progress bars, errors) passes
unchanged and in order. ``medmulti -v`` does not install it.
"""

from __future__ import annotations

import os
import re
import sys
import threading

__all__ = ["NativeLogFilter", "is_native_log_line"]

_NATIVE = re.compile(
    rb"^(?:WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] "
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags)"
)
#: the same, after other text on the line (a progress bar redraws with "\r" and no newline)
_NATIVE_WITHIN = re.compile(_NATIVE.pattern[1:])
#: a partial line starting with one of these may become a native line: wait for its end
_MAYBE = (b"W", b"I", b"E", b"F", b"T")
#: written by the filtered process when it is done (one atomic write, below PIPE_BUF)
_END = b"\x00medmulti-native-log-end\x00\n"
#: forward a partial line anyway once it is this long
_HOLD_MAX = 8192


def is_native_log_line(line: bytes) -> bool:
    """Whether a line is one of absl's native log lines (or TensorFlow's CPU notice).

    Parameters
    ----------
    line : bytes
        One line, with or without its newline.

    Returns
    -------
    bool

    Examples
    --------
    >>> is_native_log_line(b"I0000 00:00:1796521544.063679    4767 cudart_stub.cc:31] Could not find cuda")
    True
    >>> is_native_log_line(b"WARNING medmulti.data.sequence: train split: skipped 1 of 8 patients")
    False
    """
    return bool(_NATIVE.match(line))


class NativeLogFilter:
    """A context manager that drops native absl lines written to descriptor 2.

    Examples
    --------
    >>> with NativeLogFilter():
    ...     pass
    """

    def __init__(self) -> None:
        self._saved: int | None = None
        self._read: int | None = None
        self._thread: threading.Thread | None = None
        self._ended = threading.Event()  # set when the pump has forwarded everything up to _END

    def __enter__(self) -> "NativeLogFilter":
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            read, write = os.pipe()
        except (OSError, ValueError):  # no descriptor 2 (a service, a closed stream): nothing to filter
            return self
        os.dup2(write, 2)
        os.close(write)
        self._saved, self._read = saved, read
        self._thread = threading.Thread(target=self._pump, name="medmulti-native-log", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        saved = self._saved  # read once: the pump clears it at end-of-file
        if saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        # A helper process started meanwhile (multiprocessing's resource tracker or fork
        # server, a worker) may still hold the pipe, so end-of-file may never come. Instead
        # this process writes a marker last, into the pipe: the pipe is first-in first-out,
        # so once the pump has seen the marker everything written before it has been
        # forwarded. The pump keeps forwarding such a helper's lines afterwards and closes
        # both of its descriptors itself at end-of-file, so none is closed under it and reused.
        try:
            os.write(2, _END)
        except OSError:
            pass
        os.dup2(saved, 2)  # closes our write end; the pump cannot see end-of-file before this
        self._ended.wait(timeout=2.0)

    def _emit(self, data: bytes) -> None:
        if data and self._saved is not None:
            try:
                os.write(self._saved, data)
            except OSError:
                pass

    def _pump(self) -> None:
        assert self._read is not None
        pending = b""
        while True:
            try:
                chunk = os.read(self._read, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
            out = []
            while pending:
                end = pending.find(b"\n")
                if end < 0:
                    if (pending[:1] in _MAYBE or b"\x00" in pending) and len(pending) < _HOLD_MAX:
                        break  # wait for the rest of a line that may be a native one
                    out.append(pending)
                    pending = b""
                    break
                line, pending = pending[: end + 1], pending[end + 1 :]
                if line.endswith(_END):  # this process is done: forward what came before
                    out.append(line[: -len(_END)])
                    self._emit(b"".join(out))
                    out = []
                    self._ended.set()
                    continue
                found = _NATIVE_WITHIN.search(line)
                if found is None:
                    out.append(line)
                elif found.start():  # a native line written after a progress bar's "\r..." text
                    out.append(line[: found.start()])
            self._emit(b"".join(out))
        if pending and not is_native_log_line(pending):
            self._emit(pending)
        self._ended.set()
        os.close(self._read)
        saved, self._saved = self._saved, None
        if saved is not None:
            os.close(saved)
