"""`score --engine ray` on a local cluster it starts itself: Ray's own start-up WARNING lines (token authentication
and the like, issue #35) stay out of the user's terminal unless `ray.verbose=true`. A subprocess of its own: the
start-up is what is tested, and tests/test_ray_engine.py's cluster is already up in its process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coca_video.data.synthetic import SyntheticVideos
from coca_video.video import write_video

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.needs("ray"), pytest.mark.slow]


def test_a_ray_run_prints_no_warning_lines_of_rays_own(tmp_path):
    clips = SyntheticVideos(2, size=32, num_frames=2, seed=1, split="test", p_reference=0.0)
    for i in range(2):
        write_video(tmp_path / f"clip{i}.mp4", clips[i][0], fps=2)
    out = tmp_path / "scores.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    env.pop("RAY_AUTH_MODE", None)  # the default, under which Ray 2.60 warns that it turned token authentication on
    done = subprocess.run([sys.executable, "-m", "coca_video.cli", "score", str(tmp_path), "--out", str(out),
                           "engine=ray", "decode.num_frames=2", "decode.workers=0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert pq.read_table(out).column("status").to_pylist() == ["ok", "ok"]
    lines = done.stderr.replace("\r", "\n").splitlines()
    assert not [line for line in lines if "WARNING" in line], done.stderr[-2000:]
