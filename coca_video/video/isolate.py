"""Run decodes in a helper process with a time limit.

Native decoders can hang while holding the GIL (decord on a file whose header claims more frames than it has), and
a hung native call cannot be interrupted by a signal in the same process; a helper process that is killed can.
Each process that decodes (the main one, or each DataLoader worker) starts one light helper the first time it needs
it: a fresh interpreter that imports only ``coca_video.video`` (numpy, PyAV, decord; not torch), and keeps it for
every later call, so a decode costs a round trip through a pipe, not a process start. A call that runs over its
limit kills the helper; the next call starts a new one.
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_BOOT = f"""
import sys, types
package = types.ModuleType("coca_video")  # the package without its __init__ (which imports torch)
package.__path__ = [{str(_PACKAGE_DIR)!r}]
sys.modules["coca_video"] = package
from coca_video.video.isolate import serve
serve()
"""
_HEADER = struct.Struct("<Q")


class DecodeTimeout(Exception):
    """The helper ran past its time limit and was killed."""


class _Helper:
    def __init__(self) -> None:
        self.owner = os.getpid()
        self.process = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


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
        ok, value = pickle.loads(_read(helper.process.stdout.fileno(), time.monotonic() + timeout, timeout))
    except BaseException:
        helper.kill()
        _helper = None
        raise
    if ok:
        return value
    raise value


def _read(fd: int, deadline: float, timeout: float) -> bytes:
    header = _read_exactly(fd, _HEADER.size, deadline, timeout)
    return _read_exactly(fd, _HEADER.unpack(header)[0], deadline, timeout)


def _read_exactly(fd: int, size: int, deadline: float, timeout: float) -> bytes:
    chunks, remaining = [], size
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            raise DecodeTimeout(f"decoding took longer than {timeout:g} s")
        chunk = os.read(fd, min(remaining, 1 << 22))
        if not chunk:
            raise DecodeTimeout("the decoding process died without a result")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def serve() -> None:
    """The helper's loop: read a request, run it, write the pickled (ok, result-or-exception); stop at EOF."""
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = requests.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        module, name, args = pickle.loads(requests.read(_HEADER.unpack(header)[0]))
        try:
            target: Any = importlib.import_module(module)
            for part in name.split("."):
                target = getattr(target, part)
            reply = pickle.dumps((True, target(*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # noqa: BLE001 -- the caller re-raises it
            try:
                reply = pickle.dumps((False, err), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 -- an exception that does not pickle travels as text
                reply = pickle.dumps((False, RuntimeError(f"{type(err).__name__}: {err}")))
        replies.write(_HEADER.pack(len(reply)) + reply)
        replies.flush()
