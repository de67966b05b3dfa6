"""What ``score`` does to its output when things go wrong around it: a second run into the same ``--out`` (refused at
once, the first run's rows all kept), a stale lock (taken over), a full disk (one line, flushed rows safe, a rerun
completes), and replacing only outputs of ours."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import coca_video.io
from coca_video.cli import main
from coca_video.data.synthetic import SyntheticVideos
from coca_video.errors import OutputError
from coca_video.io import exclusive_lock
from coca_video.video import write_video

REPO = Path(__file__).resolve().parents[1]
FAST = ["decode.workers=0", "decode.num_frames=2", "decode.batch_size=1"]

# Process A: the real CLI, but the scoring waits for GO to exist (so the test knows it is mid-run, holding the lock)
HELD_RUN = """
import sys, time
from pathlib import Path
import coca_video.tasks.score as score
real = score.score_paths
def held(*args, **kwargs):
    Path(sys.argv[1]).write_text("started")
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
    return real(*args, **kwargs)
score.score_paths = held
from coca_video.cli import main
sys.exit(main(sys.argv[3:]))
"""


def make_clips(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    frames = SyntheticVideos(count, size=64, num_frames=4, seed=seed, split="test", p_reference=0.0)
    for i in range(count):
        write_video(folder / f"clip{i}.mp4", frames[i][0], fps=4)
    return folder


def score_argv(videos: Path, out: Path, *extra: str) -> list[str]:
    return ["score", str(videos), "--out", str(out), *extra, *FAST]


@pytest.mark.slow
def test_a_second_run_into_the_same_out_is_refused_and_the_first_keeps_every_row(tmp_path):
    first, second = make_clips(tmp_path / "a", 3, seed=1), make_clips(tmp_path / "b", 2, seed=2)
    out, started, go = tmp_path / "s.parquet", tmp_path / "started", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", HELD_RUN, str(started), str(go), *score_argv(first, out)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not started.exists():
            assert holder.poll() is None and time.time() < deadline, holder.communicate()
            time.sleep(0.05)
        refused = subprocess.run([sys.executable, "-m", "coca_video.cli", *score_argv(second, out)], cwd=REPO,
                                 capture_output=True, text=True, timeout=120, check=False)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert f"is being written by pid {holder.pid} on host {socket.gethostname()}" in refused.stderr
    finally:
        go.write_text("go")
        _, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err
    rows = pq.read_table(out).to_pydict()
    assert sorted(rows["path"]) == sorted(str(p) for p in first.glob("*.mp4"))
    assert rows["status"] == ["ok"] * 3
    assert not (tmp_path / "s.parquet.parts" / "rank0.lock").exists()  # released at the end


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    videos, out = make_clips(tmp_path / "v", 1, seed=3), tmp_path / "s.parquet"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "s.parquet.parts" / "rank0.lock"
    lock.parent.mkdir()
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")
    with pytest.warns(UserWarning, match=f"stale lock of pid {dead.pid}"):
        assert main(score_argv(videos, out)) == 0
    assert pq.read_table(out).num_rows == 1 and not lock.exists()
    capsys.readouterr()


def test_a_lock_is_released_on_an_exception_and_a_live_holder_refuses(tmp_path):
    lock = tmp_path / "x.lock"
    with pytest.raises(KeyboardInterrupt), exclusive_lock(lock, "x"):
        assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]
        raise KeyboardInterrupt
    assert not lock.exists()
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")  # alive: this very process
    with pytest.raises(OutputError, match=f"x is being written by pid {os.getpid()}"), exclusive_lock(lock, "x"):
        pass
    lock.write_text("1 some-other-host\n")  # another host: liveness unknown, never taken over
    with pytest.raises(OutputError, match="on host some-other-host"), exclusive_lock(lock, "x"):
        pass


def test_a_full_disk_is_one_line_keeps_flushed_rows_and_a_rerun_completes(tmp_path, monkeypatch, capsys):
    videos, out = make_clips(tmp_path / "v", 3, seed=4), tmp_path / "s.parquet"
    real, calls = coca_video.io.write_parquet, []

    def fills_up(table, path):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(table, path)

    monkeypatch.setattr(coca_video.io, "write_parquet", fills_up)
    assert main(score_argv(videos, out)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("coca-video")]  # not the bar
    assert "Traceback" not in "\n".join(err)
    assert err == [f"coca-video score: error: no space left on device writing {out}; 1 rows are safe; rerun to resume"]
    assert not (tmp_path / "s.parquet.parts" / "rank0.lock").exists()
    monkeypatch.setattr(coca_video.io, "write_parquet", real)
    assert main(score_argv(videos, out)) == 0
    assert '"scored_now": 2' in capsys.readouterr().out  # the flushed row was not scored again
    assert pq.read_table(out).column("status").to_pylist() == ["ok"] * 3


def test_a_previous_output_and_report_of_ours_are_replaced(tmp_path, capsys):
    videos, out, report = make_clips(tmp_path / "v", 1, seed=5), tmp_path / "s.parquet", tmp_path / "r.html"
    labels = tmp_path / "labels.txt"
    labels.write_text("red\nblue\n")
    argv = score_argv(videos, out, "--labels", str(labels), "--report", str(report))
    assert main(argv) == 0
    first = report.stat().st_mtime_ns
    (videos / "clip0.mp4").touch()  # changed: scored again, both outputs rewritten
    assert main(argv) == 0, capsys.readouterr().err
    assert report.stat().st_mtime_ns > first and pq.read_table(out).num_rows == 1
