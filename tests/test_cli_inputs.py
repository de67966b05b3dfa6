"""The top-level command and score's inputs as a new user types them: --version, a --help that does not load torch,
several paths (a shell glob) as score's input, and no input at all as a usage error that writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import coca_video
from coca_video.cli import main
from coca_video.data.synthetic import SyntheticVideos
from coca_video.video import write_video

REPO = Path(__file__).resolve().parents[1]
FAST = ["decode.workers=0", "decode.num_frames=2", "decode.batch_size=2"]


def run_cli(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coca_video.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120, check=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[list[Path], Path]:
    """Three tiny clips in one folder and a class list beside it."""
    root = tmp_path_factory.mktemp("clips")
    frames = SyntheticVideos(3, size=64, num_frames=4, seed=2, split="test", p_reference=0.0)
    paths = [root / f"clip_{i:03d}.mp4" for i in range(3)]
    for i, path in enumerate(paths):
        write_video(path, frames[i][0], fps=4)
    labels = root.parent / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    return paths, labels


def test_version_prints_the_packages_version_without_loading_torch():
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"coca-video {coca_video.__version__}"


def test_the_top_level_help_and_version_do_not_import_torch():
    probe = ("import sys\nfrom coca_video.cli import main\nfor argv in (['--help'], ['--version']):\n"
             "    try:\n        main(argv)\n    except SystemExit as stop:\n        assert stop.code == 0, stop.code\n"
             "print(sorted(m for m in ('torch', 'numpy', 'av', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "score" in done.stdout and "--version" in done.stdout  # the help itself was printed
    assert done.stdout.strip().splitlines()[-1] == "[]"  # none of the heavy imports


def test_several_paths_are_scored_as_one_input(clips, tmp_path, capsys):
    paths, labels = clips
    out = tmp_path / "glob.csv"
    # the order a shell glob gives, an option between the paths, and an override after them
    code = main(["score", str(paths[0]), str(paths[1]), "--labels", str(labels), "--out", str(out), str(paths[2]),
                 "top_k=2", *FAST])
    assert code == 0, capsys.readouterr().err
    scored = pd.read_csv(out)
    assert sorted(scored.path) == sorted(str(p) for p in paths)
    assert set(scored.status) == {"ok"}
    assert scored.top2_label.notna().all() and "top3_label" not in scored  # top_k=2 after the paths was applied


def test_several_paths_score_what_their_folder_scores(clips, tmp_path, capsys):
    """Two paths of the folder's three: exactly those two rows, with the same labels as the folder's run gives."""
    paths, labels = clips
    assert main(["score", str(paths[0].parent), "--labels", str(labels), "--out", str(tmp_path / "all.csv"),
                 *FAST]) == 0
    assert main(["score", str(paths[2]), str(paths[0]), "--labels", str(labels), "--out", str(tmp_path / "two.csv"),
                 *FAST]) == 0
    capsys.readouterr()
    folder = pd.read_csv(tmp_path / "all.csv").set_index("path")
    two = pd.read_csv(tmp_path / "two.csv").set_index("path")
    assert sorted(two.index) == sorted([str(paths[0]), str(paths[2])])
    assert (two.top1_label == folder.loc[two.index, "top1_label"]).all()


def test_a_path_repeated_by_two_globs_is_scored_once(clips, tmp_path, capsys):
    paths, labels = clips
    assert main(["score", str(paths[0]), str(paths[0].parent), "--labels", str(labels),
                 "--out", str(tmp_path / "s.csv"), *FAST]) == 0
    capsys.readouterr()
    assert sorted(pd.read_csv(tmp_path / "s.csv").path) == sorted(str(p) for p in paths)


def test_score_with_no_input_is_a_usage_error_that_writes_nothing(clips, tmp_path, monkeypatch, capsys):
    """Before: it scored the working folder recursively and wrote scores.parquet (and its parts) into it."""
    paths, labels = clips
    work = tmp_path / "work"
    work.mkdir()
    (work / "holiday.mp4").write_bytes(paths[0].read_bytes())  # a video it must not pick up
    monkeypatch.chdir(work)
    assert main(["score", "--labels", str(labels), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("coca-video score: error: no videos given"), err
    assert sorted(p.name for p in work.iterdir()) == ["holiday.mp4"]


@pytest.mark.slow
def test_score_with_no_input_in_a_real_process(tmp_path):
    done = run_cli("score", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no videos given" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_input_too_many_for_a_one_input_command_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["serve", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    assert stop.value.code == 2
    assert "unrecognized arguments: " + str(tmp_path / "b.parquet") in capsys.readouterr().err
