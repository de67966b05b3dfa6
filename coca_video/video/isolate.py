"""Run a decode in a forked child process with a time limit.

Native decoders can hang while holding the GIL (decord on a file whose header claims more frames than it has), and
a hung native call cannot be interrupted by a signal in the same process; a child that is killed can. The child
inherits the parent's memory (fork), runs the function, and sends the pickled result back through a pipe. Works
inside DataLoader workers (which may not start multiprocessing children) because it uses os.fork directly.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
from typing import Any, Callable


class DecodeTimeout(Exception):
    """The child ran past its time limit and was killed."""


def call_with_timeout(fn: Callable[..., Any], timeout: float, *args: Any) -> Any:
    """``fn(*args)`` in a forked child; its result or its exception, or DecodeTimeout after ``timeout`` seconds."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the parent's code
        os.close(read_fd)
        try:
            try:
                payload = pickle.dumps((True, fn(*args)), protocol=pickle.HIGHEST_PROTOCOL)
            except BaseException as err:  # noqa: BLE001 -- the parent re-raises it
                payload = pickle.dumps((False, err), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                    raise DecodeTimeout(f"decoding took longer than {timeout:g} s")
                chunk = os.read(pipe.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    except BaseException:
        _kill(pid)
        raise
    os.waitpid(pid, 0)
    if not chunks:
        raise DecodeTimeout("the decoding process died without a result")
    ok, value = pickle.loads(b"".join(chunks))
    if ok:
        return value
    raise value


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
