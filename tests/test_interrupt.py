"""Ctrl-C, as a terminal sends it: SIGINT to the whole process group of a ``coca-video score`` run, at several
moments (loading the CLI, importing torch, building the model, mid-scoring, and three in a row). Each time the run
ends with the one interrupted line and exit status 130, and no process of the group prints a traceback (the decode
helpers and workers leave SIGINT to the command)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, clips_and_labels

from coca_video.video import isolate

INTERRUPTED = "coca-video score: interrupted (results flushed so far are kept)"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path]:
    """Twelve clips, enough that scoring them with two decoding workers is still going when the SIGINT comes."""
    return clips_and_labels(tmp_path_factory.mktemp("clips"), 12, size=96, num_frames=24, seed=3, fps=12,
                            name="clip_{i:02d}.mp4")


def cli_loading(pid: int) -> bool:
    """The command's process is past the interpreter's own start, into loading the CLI: it has mapped PyYAML's or
    json's C extension (the interpreter's start maps neither). A SIGINT before that point is Python's, not ours."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return "_yaml." in maps or "_json." in maps


def wait_for(predicate, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "the run never reached the moment to interrupt"
        time.sleep(0.005)


def interrupt_score(folder: Path, labels: Path, out: Path, after: float, scoring: bool, times: int = 1):
    """Start ``coca-video score`` in its own process group, wait until it loads the CLI (and, with ``scoring``, until
    its progress bar shows), sleep ``after`` seconds, then send SIGINT to the group ``times`` times."""
    err = out.with_suffix(".stderr")
    with open(err, "wb") as stderr:
        run = subprocess.Popen([sys.executable, "-m", "coca_video", "score", str(folder), "--labels", str(labels),
                                "--out", str(out), "decode.workers=2", "decode.num_frames=8"], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=stderr,
                               start_new_session=True)
        try:
            wait_for(lambda: cli_loading(run.pid) or run.poll() is not None)
            if scoring:
                wait_for(lambda: "video/s" in err.read_text(errors="replace") or run.poll() is not None)
            time.sleep(after)
            for _ in range(times):
                if run.poll() is None:
                    os.killpg(run.pid, signal.SIGINT)
                time.sleep(0.05)
            code = run.wait(timeout=120)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    return code, err.read_text(errors="replace")


MOMENTS = {  # name: (seconds after the moment, whether the moment is the progress bar, SIGINTs)
    "loading the cli": (0.0, False, 1),
    "importing torch": (0.4, False, 1),
    "building the model": (1.5, False, 1),
    "mid-scoring": (1.0, True, 1),
    "three in a row mid-scoring": (0.5, True, 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_at_any_moment_is_one_line_exit_130_and_no_traceback(moment, folder, tmp_path):
    after, scoring, times = MOMENTS[moment]
    code, err = interrupt_score(*folder, tmp_path / "scores.parquet", after, scoring, times)
    if code == 0:
        pytest.skip(f"the run finished before the SIGINT at '{moment}' (a machine faster than expected)")
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "video/s" not in line]
    assert lines == [INTERRUPTED] or lines == ["coca-video: interrupted"], err  # the latter: before score parsed
    assert code == 130, err


def test_the_decode_helper_leaves_sigint_to_its_parent():
    """A SIGINT to the helper alone (as a terminal's Ctrl-C reaches it) neither kills it nor prints anything: the
    next decode runs in the same helper process."""
    assert isolate.call_with_timeout(os.getpid, 30) > 0  # starts the helper
    helper = isolate._helper  # noqa: SLF001 -- the one helper of this process
    pid = helper.process.pid
    os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    assert helper.process.poll() is None
    assert isolate.call_with_timeout(os.getpid, 30) == pid  # the same process answered


def finished(args) -> None:
    pass


def interrupted(args) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("work, status", [(finished, 0), (interrupted, 130)])
def test_an_in_process_command_gives_the_caller_its_ctrl_c_back(work, status, monkeypatch):
    """``cli.main`` called in-process (a test, a notebook) ignores Ctrl-C only while it prints its last line: the
    caller gets its SIGINT handler back. Left ignored, every process the caller starts later inherits the ignored
    SIGINT, and a terminal's Ctrl-C no longer stops them (this module's Ctrl-C runs all skipped after test_score's
    in-process commands had run in the same pytest)."""
    import argparse

    from coca_video import cli

    monkeypatch.setattr(cli, "parse", lambda argv: argparse.Namespace(command="probe-of-ctrl-c", func=work))
    before = signal.getsignal(signal.SIGINT)
    assert before not in (signal.SIG_IGN, None)
    assert cli.main([]) == status
    assert signal.getsignal(signal.SIGINT) is before
