"""Ends every process of a local Ray cluster when the driver that started it ends, however it ends.

``ray.init`` on a machine starts gcs_server, a raylet, its agents and workers. A clean ``ray.shutdown()`` ends most
of them, but a driver killed with SIGKILL cannot, and its raylet's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) were measured here still running 100 s after one was. So before it starts a cluster the
driver marks its environment with a token of its own (:data:`TOKEN_ENV`), which every process Ray starts inherits,
and starts this reaper: a small interpreter (it imports nothing of the package but this file, not torch or ray)
holding the read end of a pipe from the driver. When the pipe closes (the driver closed it after its shutdown, or
the kernel did when the driver died), the reaper SIGKILLs every process of this user whose environment carries the
token, then exits.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

TOKEN_ENV = "COCA_VIDEO_RAY_CLUSTER"  # marks the processes of one driver's local cluster
_BOOT = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from reaper import serve
serve(sys.argv[1])
"""


def start(token: str | None = None) -> tuple[str, subprocess.Popen]:
    """A fresh token (or ``token``) and the reaper watching this process for it; set ``os.environ[TOKEN_ENV]`` to
    the token before starting the cluster, and close the reaper's stdin (:func:`finish`) after shutting it down."""
    token = token or f"{os.getpid()}-{secrets.token_hex(8)}"
    reaper = subprocess.Popen([sys.executable, "-c", _BOOT, token], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              start_new_session=True)  # its own session: a Ctrl-C to the driver's group spares it
    return token, reaper


def finish(reaper: subprocess.Popen, timeout: float = 30) -> None:
    """Tell the reaper the driver is done (it then ends what is left of the cluster) and wait for it."""
    reaper.stdin.close()
    try:
        reaper.wait(timeout)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()


def serve(token: str) -> None:
    """The reaper's body: wait for EOF on stdin, then SIGKILL the token's processes (twice: one may have started a
    child while the first pass ran)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(1 << 16):
        pass
    for _ in range(2):
        for pid in marked(token):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def marked(token: str) -> list[int]:
    """The processes (other than this one) whose environment holds ``TOKEN_ENV=token``; those whose environment
    cannot be read (another user's) are not ours."""
    entry = f"{TOKEN_ENV}={token}".encode()
    found = []
    for folder in Path("/proc").glob("[0-9]*"):
        if int(folder.name) == os.getpid():
            continue
        try:
            environ = (folder / "environ").read_bytes()
        except OSError:
            continue
        if entry in environ.split(b"\0"):
            found.append(int(folder.name))
    return found
