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

import fcntl
import os
import re
import struct
import sys
import termios
import threading
import time

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


def _unread(fd: int | None) -> int:
    """Bytes waiting in a pipe (``FIONREAD``); 0 when it is closed."""
    if fd is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


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
        self._waiting = threading.Event()  # set while the pump waits for data

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
        if self._saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # closes our write end: the pump sees end-of-file
        # A helper process started meanwhile (multiprocessing's resource tracker or fork
        # server, a worker) may still hold the pipe, so end-of-file may never come: wait only
        # until what was written so far has been forwarded. The pump keeps forwarding such a
        # process's lines and closes both of its descriptors itself at end-of-file, so none
        # is closed under it and reused.
        deadline = time.monotonic() + 2.0
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            if self._waiting.is_set() and _unread(self._read) == 0:
                break
            time.sleep(0.005)

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
            self._waiting.set()
            try:
                chunk = os.read(self._read, 65536)
            except OSError:
                break
            finally:
                self._waiting.clear()
            if not chunk:
                break
            pending += chunk
            out = []
            while pending:
                end = pending.find(b"\n")
                if end < 0:
                    if pending[:1] in _MAYBE and len(pending) < _HOLD_MAX:
                        break  # wait for the rest of a line that may be a native one
                    out.append(pending)
                    pending = b""
                    break
                line, pending = pending[: end + 1], pending[end + 1 :]
                found = _NATIVE_WITHIN.search(line)
                if found is None:
                    out.append(line)
                elif found.start():  # a native line written after a progress bar's "\r..." text
                    out.append(line[: found.start()])
            self._emit(b"".join(out))
        if pending and not is_native_log_line(pending):
            self._emit(pending)
        os.close(self._read)
        saved, self._saved = self._saved, None
        if saved is not None:
            os.close(saved)
