"""Ends every process of a local Ray cluster when the driver that started it ends, however it ends.

``ray.init`` on a machine starts gcs_server, a raylet, its agents and workers. A clean ``ray.shutdown()`` ends most
of them, but a driver killed with SIGKILL cannot, and its raylet's agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``) were measured here still running 100 s after one was. So before it starts a cluster the
driver marks its environment with a token of its own (:data:`TOKEN_ENV`), which every process Ray starts inherits,
and starts this reaper: a small interpreter (it imports nothing of the package but this file, not torch or ray)
holding the read end of a pipe from the driver. When the pipe closes (the driver closed it after its shutdown, or
the kernel did when the driver died), the reaper SIGKILLs every process of this user whose environment carries the
token, and every descendant of theirs, then exits. While it waits it notes them every second (see :func:`serve`): the
raylet's agents are not always found by their token once the driver is gone.
"""

from __future__ import annotations

import os
import secrets
import select
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


def serve(token: str, every: float = 1.0) -> None:
    """The reaper's body: until EOF on stdin, note every ``every`` seconds the token's processes and their
    descendants; then SIGKILL those still running and the token's processes and descendants now (twice: one may have
    started a child while the first pass ran). Noting them while the cluster runs matters: when the driver dies, the
    kernel ends its raylet (Ray starts it to die with its parent), and the raylet's agents, orphaned, do not always
    show the token in ``/proc/PID/environ`` (setproctitle writes their titles over that memory)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seen: dict[int, str] = {}  # pid -> its start time: the cluster's processes noted so far
    while True:
        ready, _, _ = select.select([0], [], [], every)
        if ready and not os.read(0, 1 << 16):
            break
        note(seen, token)
    for _ in range(2):
        note(seen, token)
        for pid in with_descendants([pid for pid, start in seen.items() if started(pid) == start]):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def note(seen: dict[int, str], token: str) -> None:
    """Add the token's processes and their descendants now to ``seen`` (pid -> start time, so a pid the kernel gives
    to another process later is not mistaken for ours)."""
    for pid in with_descendants(marked(token)):
        start = started(pid)
        if start and pid not in seen:
            seen[pid] = start


def started(pid: int) -> str:
    """``pid``'s start time (clock ticks since boot, field 22 of /proc/PID/stat); empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


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


def with_descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process below them now (children, theirs, ...), from the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = set(pids), list(pids)
    while todo:
        below = [pid for pid in children.get(todo.pop(), []) if pid not in found and pid != os.getpid()]
        found.update(below)
        todo += below
    return sorted(found)
