"""Run decodes in a helper process with a time limit.

Native decoders can hang while holding the GIL (decord on a file whose header claims more frames than it has), and
a hung native call cannot be interrupted by a signal in the same process; a helper process that is killed can.
Each process that decodes (the main one, or each DataLoader worker) starts one light helper the first time it needs
it: a fresh interpreter that imports only ``coca_video.video`` (numpy, PyAV, decord; not torch), and keeps it for
every later call, so a decode costs a round trip through a pipe, not a process start. A call that runs over its
limit kills the helper; the next call starts a new one.

The helper cannot outlive the process that started it: on Linux it asks the kernel (PR_SET_PDEATHSIG) to SIGKILL
it when its parent dies, which works even while it is stuck in native code holding the GIL; everywhere, a watchdog
thread exits when the parent pid changes. The death signal follows the parent *thread* that started the helper:
if that thread ends, the helper dies with it and the next call starts a new one. A helper started by a DataLoader
worker also follows the run's root process (``COCA_VIDEO_ROOT_PID``: the command, or the first process that imported
this module): when the root is SIGKILLed, its workers (see ``data.video``) and their helpers exit at once (0.2 s
measured), instead of when the worker's current item ends and the DataLoader's 5 s check of its parent comes. Being
at the lowest CPU priority, they can take seconds to be scheduled for it while other processes keep every core busy.

While it works, the called function can report progress (``report_progress``); the messages travel over the reply
pipe, and a timeout says how far the call got.

A large array result (decoded frames) does not travel through the pipe: on Linux the helper writes it into an
in-memory file (memfd) that the parent reads through /proc, one copy each way. Pickled through the pipe, 16 frames of
720p (44 MB) took 230 ms and 16 of 640x272 (8 MB) 40 ms, most of a decode's time, on the 2 shared cores measured.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_BOOT = f"""
import signal, sys, types
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends this helper (see sigint_held)
if hasattr(signal, "pthread_sigmask"):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})  # held since the fork; one pending is now dropped
package = types.ModuleType("coca_video")  # the package without its __init__ (which imports torch)
package.__path__ = [{str(_PACKAGE_DIR)!r}]
sys.modules["coca_video"] = package
from coca_video.video.isolate import serve
serve(int(sys.argv[1]))
"""
_HEADER = struct.Struct("<Q")
_PROGRESS, _RESULT = 0, 1  # reply kinds: a progress count, or the final (ok, value)
_PR_SET_PDEATHSIG = 1
_WATCHDOG_SECONDS = 0.5
ROOT_ENV = "COCA_VIDEO_ROOT_PID"  # the process whose death ends every decoding process under it
os.environ.setdefault(ROOT_ENV, str(os.getpid()))
_FILE_BYTES = 1 << 20  # array results from this size on go through an in-memory file, not the pipe


class DecodeTimeout(Exception):
    """The helper ran past its time limit (``waited`` seconds) and was killed; ``progress`` is the last count it
    reported (0 if none)."""

    def __init__(self, message: str, waited: float, progress: int):
        super().__init__(message)
        self.waited, self.progress = waited, progress

    def __reduce__(self):
        return DecodeTimeout, (str(self), self.waited, self.progress)


class _Helper:
    def __init__(self) -> None:
        self.owner = os.getpid()
        with sigint_held():
            self.process = subprocess.Popen([sys.executable, "-c", _BOOT, str(self.owner)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE)

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """SIGINT blocked in this thread meanwhile (POSIX): one that comes stays pending and is delivered (as a
    KeyboardInterrupt) when the block ends, or is taken by another thread; never lost. A child started inside
    inherits it blocked: the helper's boot code then ignores it, so a Ctrl-C to the terminal's process group, even
    during the helper's interpreter start, reaches only the parent, which ends the helper. The CLI holds it while
    torch loads (native code there aborts the process on a KeyboardInterrupt)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_helper: _Helper | None = None


def call_with_timeout(fn: Callable[..., Any], timeout: float, *args: Any) -> Any:
    """``fn(*args)`` (a module-level function) in the helper process: its result or its exception, or
    DecodeTimeout after ``timeout`` seconds (the helper is then killed and replaced on the next call)."""
    global _helper
    if _helper is None or not _helper.alive():
        _helper = _Helper()
    helper = _helper
    request = pickle.dumps((fn.__module__, fn.__qualname__, args), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        helper.process.stdin.write(_HEADER.pack(len(request)) + request)
        helper.process.stdin.flush()
        ok, value = _await_result(helper.process.stdout.fileno(), timeout)
        if ok and isinstance(value, _HelperFile):
            value = value.load()
    except BaseException:
        helper.kill()
        _helper = None
        raise
    if ok:
        return value
    raise value


class _HelperFile(NamedTuple):
    """An array the helper left in its in-memory file ``fd`` (open until its next request)."""

    pid: int
    fd: int
    dtype: str
    shape: tuple[int, ...]

    def load(self) -> np.ndarray:
        return np.fromfile(f"/proc/{self.pid}/fd/{self.fd}", self.dtype).reshape(self.shape)


_result_file: int | None = None  # in the helper: the in-memory file holding the last large result


def _shared(result: Any) -> Any:
    """``result``, or for a large array on Linux a :class:`_HelperFile` holding it (the previous one is closed:
    the parent has read it before it sent this request)."""
    global _result_file
    if _result_file is not None:
        os.close(_result_file)
        _result_file = None
    if not (isinstance(result, np.ndarray) and result.nbytes >= _FILE_BYTES and hasattr(os, "memfd_create")):
        return result
    _result_file = os.memfd_create("coca-video-result")
    with open(os.dup(_result_file), "wb") as file:
        file.write(np.ascontiguousarray(result).data)
    return _HelperFile(os.getpid(), _result_file, result.dtype.str, result.shape)


def _await_result(fd: int, timeout: float) -> tuple[bool, Any]:
    """Read replies until the result, keeping the last progress count for the timeout's message."""
    started, progress = time.monotonic(), 0
    deadline = started + timeout
    try:
        while True:
            kind, value = pickle.loads(_read(fd, deadline))
            if kind == _RESULT:
                return value
            progress = value
    except _Expired as expired:
        waited = time.monotonic() - started
        raise DecodeTimeout(f"{expired} after {waited:.0f} s (limit {timeout:g} s)", waited, progress) from None


class _Expired(Exception):
    """The deadline passed, or the helper died, before a whole reply arrived."""


def _read(fd: int, deadline: float) -> bytes:
    header = _read_exactly(fd, _HEADER.size, deadline)
    return _read_exactly(fd, _HEADER.unpack(header)[0], deadline)


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    chunks, remaining = [], size
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            raise _Expired("timed out")
        chunk = os.read(fd, min(remaining, 1 << 22))
        if not chunk:
            raise _Expired("the decoding process died without a result")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


_replies: Any = None  # the helper's reply pipe; None in any other process


def report_progress(count: int) -> None:
    """Tell the waiting parent that ``count`` units of work are done (in the helper; a no-op elsewhere)."""
    if _replies is not None:
        _send(_PROGRESS, count)


def _send(kind: int, value: Any) -> None:
    reply = pickle.dumps((kind, value), protocol=pickle.HIGHEST_PROTOCOL)
    _replies.write(_HEADER.pack(len(reply)) + reply)
    _replies.flush()


def _die_with_parent(parent: int) -> None:
    """Make sure this helper ends when ``parent`` does: the kernel's death signal (Linux), then a check that the
    parent did not die before it was set (we would already be re-parented), then a watchdog thread."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)  # 9 = SIGKILL
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    follow_root()


def follow_root() -> None:
    """End this process (exit status 1) as soon as the run's root process (:data:`ROOT_ENV`) ends, when that is one
    of its ancestors (a stale or foreign value is ignored); for a decoding worker, or a worker's helper, whose own
    parent may linger."""
    try:
        root = int(os.environ.get(ROOT_ENV, ""))
    except ValueError:
        return
    if root != os.getpid() and root in _ancestors():
        threading.Thread(target=_exit_with, args=(root,), daemon=True).start()


def _ancestors() -> list[int]:
    """This process's parent, its parent, ... up to init (Linux: read from /proc; elsewhere just the parent)."""
    chain, pid = [], os.getpid()
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return chain or [os.getppid()]
        chain.append(pid)
    return chain


def _exit_with(pid: int) -> None:
    """Block until process ``pid`` ends (at once through a pidfd where the kernel has them), then ``os._exit(1)``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfds (not Linux, or an old kernel): look twice a second
        while pid_exists(pid):
            time.sleep(_WATCHDOG_SECONDS)
        os._exit(1)
    select.select([pidfd], [], [])
    os._exit(1)


def pid_exists(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (here, not in ``io``, which imports it: this module imports
    nothing of the package, so that it loads alone in the helper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_SECONDS)
    os._exit(1)


def serve(parent: int) -> None:
    """The helper's loop: read a request, run it, write progress and then the pickled (ok, result-or-exception);
    stop at EOF. Dies with ``parent`` (the pid that started it)."""
    global _replies
    _die_with_parent(parent)
    requests, _replies = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = requests.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        module, name, args = pickle.loads(requests.read(_HEADER.unpack(header)[0]))
        try:
            target: Any = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
            _send(_RESULT, (True, _shared(target(*args))))
        except Exception as err:  # noqa: BLE001 -- the caller re-raises it
            try:
                _send(_RESULT, (False, err))
            except Exception:  # noqa: BLE001 -- an exception that does not pickle travels as text
                _send(_RESULT, (False, RuntimeError(f"{type(err).__name__}: {err}")))
