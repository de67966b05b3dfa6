"""`coca-video score` end to end on real mp4 files: one row per file, bad files reported, resume, two ranks, search,
and the HTML report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from coca_video.cli import main
from coca_video.config import load_config
from coca_video.data.synthetic import COLOURS, SyntheticVideos
from coca_video.search import search
from coca_video.tasks import score
from coca_video.video import write_video

from helpers import free_port
from probes import CHROMIUM, CHROMIUM_FLAGS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """12 clips (some nested, one upper-case extension), a corrupt mp4, a hidden clip and a text file."""
    root = tmp_path_factory.mktemp("videos")
    clips = SyntheticVideos(12, size=64, num_frames=8, seed=3, split="test", p_reference=0.0)
    truth = {}
    for i in range(12):
        path = root / ("nested" if i % 3 == 0 else "") / (f"clip{i:02d}" + (".MP4" if i == 5 else ".mp4"))
        path.parent.mkdir(exist_ok=True)
        write_video(path, clips[i][0], fps=8)
        truth[str(path)] = clips.scene(i).main.colour
    (root / "broken.mp4").write_bytes(b"not a video at all")
    shutil.copy(path, root / ".hidden.mp4")
    (root / "notes.txt").write_text("not a video")
    labels = root.parent / "colours.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    return root, truth, labels


def run_score(root: Path, out: Path, labels: Path, *overrides: str) -> dict:
    base = [f"videos={root}", f"out={out}", f"labels={labels}", "decode.num_frames=4", "decode.batch_size=4", "decode.workers=0", "top_k=3"]
    return score.run(load_config(score.ScoreConfig, None, [*base, *overrides]))


def test_every_file_gets_one_row_and_labels_match_the_scenes(folder, tmp_path):
    root, truth, labels = folder
    out = tmp_path / "scores.csv"
    run_score(root, out, labels)
    table = pd.read_csv(out)
    assert sorted(table.path) == sorted([*truth, str(root / "broken.mp4")])
    broken = table[table.path.str.endswith("broken.mp4")].iloc[0]
    assert broken.status == "error" and "broken.mp4" in broken.error
    written = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("path").num_frames  # the CSV's text
    assert written[str(root / "broken.mp4")] == "" and written.drop(str(root / "broken.mp4")).eq("8").all()
    ok = table[table.status == "ok"]
    assert {"size", "duration", "top1_label", "top1_score", "top3_label", "top3_score"} <= set(table.columns)
    assert (ok.top1_score >= ok.top2_score).all() and (ok.duration > 0).all()
    correct = sum(truth[r.path] == r.top1_label for r in ok.itertuples())
    assert correct >= 0.75 * len(ok), f"{correct}/{len(ok)} colours right"


@pytest.mark.slow
def test_rerun_skips_scored_files_and_rescores_a_changed_one(folder, tmp_path):
    root, truth, labels = folder
    out = tmp_path / "scores.parquet"
    first = run_score(root, out, labels)
    assert first["scored_now"] == 13 and first["errors_now"] == 1
    again = run_score(root, out, labels)
    assert again["scored_now"] == 1 and again["already_scored"] == 12  # only the broken file is retried
    changed = next(iter(truth))
    os.utime(changed, (1_000_000, 1_000_000))
    third = run_score(root, out, labels)
    assert third["scored_now"] == 2
    assert len(pd.read_parquet(out)) == 13


@pytest.mark.slow
def test_an_interrupted_run_keeps_its_flushed_batches_and_resumes_to_the_same_result(folder, tmp_path, monkeypatch):
    root, _, labels = folder
    straight = tmp_path / "straight.parquet"
    run_score(root, straight, labels)
    resumed = tmp_path / "resumed.parquet"
    calls = {"n": 0}
    original = score.VideoScorer.__call__

    def interrupt_second_batch(self, frames):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, frames)

    monkeypatch.setattr(score.VideoScorer, "__call__", interrupt_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_score(root, resumed, labels)
    partial = pd.read_parquet(resumed)
    assert 1 <= (partial.status == "ok").sum() <= 4  # the first batch survived the interrupt
    monkeypatch.undo()
    run_score(root, resumed, labels)
    a = pq.read_table(score.embeddings_path(straight)).to_pandas().set_index("path")
    b = pq.read_table(score.embeddings_path(resumed)).to_pandas().set_index("path")
    assert list(a.index) == list(b.index)
    for path in a.index:
        if a.loc[path, "video_embedding"] is not None:
            assert max(abs(x - y) for x, y in zip(a.loc[path, "video_embedding"], b.loc[path, "video_embedding"])) < 1e-5


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_score_each_file_once_and_merge(folder, tmp_path):
    root, truth, labels = folder
    out = tmp_path / "scores.parquet"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "coca_video.cli", "score", str(root), "--labels", str(labels),
           "--out", str(out), "decode.num_frames=4", "decode.workers=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(out)
    assert sorted(table.path) == sorted([*truth, str(root / "broken.mp4")])
    parts = list((tmp_path / "scores.parquet.parts").glob("*.parquet"))
    assert {p.name.split("-")[0] for p in parts} == {"rank0", "rank1"}
    single = tmp_path / "single.parquet"
    run_score(root, single, labels)
    one = pd.read_parquet(single).set_index("path")
    two = table.set_index("path").loc[one.index]
    assert (one.status == two.status).all()
    ok = one.status == "ok"
    assert (one.top1_label[ok] == two.top1_label[ok]).all()


@pytest.mark.slow
def test_search_ranks_videos_of_the_queried_colour_first(folder, tmp_path):
    root, truth, labels = folder
    out = tmp_path / "scores.parquet"
    run_score(root, out, labels)
    colour = max(set(truth.values()), key=list(truth.values()).count)
    ranked = search(score.embeddings_path(out), f"a small {colour} shape", k=3)
    hits = sum(truth[hit.path] == colour for hit in ranked[: list(truth.values()).count(colour)])
    assert hits >= 1 and truth[ranked[0].path] == colour
    assert ranked[0].score >= ranked[-1].score


def test_float16_embeddings_take_half_the_bytes_and_search_ranks_as_with_float32(folder, tmp_path, capsys):
    """embedding_dtype=float16 (issue #35): the sidecar at half the bytes, its values the float32 run's rounded to
    float16, and search ranking as on the float32 file wherever the scores are further apart than float16 can move
    them (a cosine of unit vectors moves by at most 2**-11 when one of them is rounded to float16)."""
    root, _, labels = folder
    per_frame = ["decode.sampling=fps", "decode.fps=8", "frame_embeddings=true"]  # 96 rows: the footer is small
    sidecars = {}
    for dtype in ("float32", "float16"):
        out = tmp_path / f"{dtype}.parquet"
        run_score(root, out, labels, *per_frame, f"embedding_dtype={dtype}")
        sidecars[dtype] = score.embeddings_path(out)
    full, half = (pq.read_table(sidecars[d]).to_pandas() for d in ("float32", "float16"))
    assert len(half) == len(full) > 90
    assert abs(sidecars["float16"].stat().st_size / sidecars["float32"].stat().st_size / 0.5 - 1) < 0.1
    ok = full.video_embedding.notna()
    assert ok.sum() > 90 and half.video_embedding.notna().equals(ok)
    for column in ("video_embedding", "frame_embeddings"):
        stored = np.stack([np.stack(cell) if column == "frame_embeddings" else cell for cell in half[column][ok]])
        computed = np.stack([np.stack(cell) if column == "frame_embeddings" else cell for cell in full[column][ok]])
        assert stored.dtype == np.float16 and np.array_equal(stored, computed.astype(np.float16)), column
    hits = {d: search(sidecars[d], "a small red shape", k=len(full)) for d in sidecars}
    scores = {d: {(h.path, h.start): h.score for h in hits[d]} for d in hits}
    assert max(abs(scores["float32"][key] - scores["float16"][key]) for key in scores["float32"]) <= 2 ** -11
    rank16 = {(h.path, h.start): i for i, h in enumerate(hits["float16"])}
    apart = [(a, b) for i, a in enumerate(hits["float32"]) for b in hits["float32"][i + 1:]
             if a.score - b.score > 2 * 2 ** -11]
    assert len(apart) > 1000 and hits["float32"][0].score - hits["float32"][1].score > 2 * 2 ** -11
    assert all(rank16[(a.path, a.start)] < rank16[(b.path, b.start)] for a, b in apart)
    capsys.readouterr()  # a rerun with the other dtype would mix float32 rows into a float16 store: refused
    assert main(["score", str(root), "--out", str(tmp_path / "float16.parquet"), "--labels", str(labels),
                 "decode.num_frames=4", "decode.batch_size=4", "decode.workers=0", "top_k=3", *per_frame]) == 2
    assert "embedding_dtype: 'float16' then, None now" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_flags_caption_and_report(folder, tmp_path, capsys):
    root, truth, labels = folder
    out, report = tmp_path / "scores.csv", tmp_path / "report.html"
    code = main(["score", str(root), "--labels", str(labels), "--caption", "--out", str(out), "--report", str(report),
                 "decode.num_frames=4", "decode.workers=0", "caption.method=greedy"])
    assert code == 0
    table = pd.read_csv(out)
    ok = table[table.status == "ok"]
    assert ok.caption.str.len().min() > 0
    named = sum(truth[r.path] in r.caption for r in ok.itertuples())
    assert named >= 0.5 * len(ok), ok.caption.tolist()
    page = report.read_text()
    assert page.count("data:image/jpeg") >= 6 * len(ok) and "broken.mp4" in page
    assert main(["score", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.needs("chromium")
def test_report_renders_in_headless_chromium(folder, tmp_path):
    root, _, labels = folder
    report = tmp_path / "report.html"
    run_score(root, tmp_path / "scores.csv", labels, f"report={report}")
    screenshot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1200,900",
           report.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    dom = subprocess.run([*cmd[:-2], "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert screenshot.stat().st_size > 10_000
    assert dom.stdout.count("<img") >= 6 and "broken.mp4" in dom.stdout


def test_failed_inputs_are_named_on_stderr_and_a_run_with_no_success_exits_non_zero(tmp_path, capsys):
    clips = SyntheticVideos(1, size=32, num_frames=4, seed=5, split="test", p_reference=0.0)
    write_video(tmp_path / "good.mp4", clips[0][0], fps=4)
    for name in ("bad1.mp4", "bad2.mp4"):
        (tmp_path / name).write_bytes(b"not a video at all")
    flags = ["decode.num_frames=4", "decode.workers=0"]
    assert main(["score", str(tmp_path), "--out", str(tmp_path / "s.parquet"), *flags]) == 0
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if "rows failed" in line]
    assert len(failed) == 1 and failed[0].startswith("coca-video score: 2 of 3 rows failed (2 x "), err
    assert "bad1.mp4" in failed[0] and "bad2.mp4" in failed[0] and "status=error in " in failed[0]
    (tmp_path / "good.mp4").unlink()  # left: only inputs that fail
    assert main(["score", str(tmp_path), "--out", str(tmp_path / "t.parquet"), *flags]) == 1  # ran, none succeeded
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("coca-video score: error: ") and "no input could be scored (2 rows failed" in err
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == 2  # the error rows are kept
    for out in ("s.parquet", "t.parquet"):  # num_frames an integer column beside error rows, and of error rows only
        assert pq.read_schema(tmp_path / out).field("num_frames").type == "int64", out


def test_an_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no videos here")
    assert main(["score", str(tmp_path), "--out", str(tmp_path / "s.csv")]) == 2
    assert not (tmp_path / "s.csv").exists()


def test_two_folders_into_one_out_keep_both_and_other_settings_are_refused(tmp_path, capsys):
    """Issue #24: `score A --out s` then `score B --out s` left only B's rows. The table is the store's rows (the
    files still there); a run with other settings into the same out is one line, not a silent mix."""
    clips = SyntheticVideos(4, size=32, num_frames=4, seed=5, split="test", p_reference=0.0)
    folders = [tmp_path / "a", tmp_path / "b"]
    for i in range(4):
        folders[i // 2].mkdir(exist_ok=True)
        write_video(folders[i // 2] / f"clip{i}.mp4", clips[i][0], fps=4)
    labels = tmp_path / "colours.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    out = tmp_path / "s.parquet"
    run_score(folders[0], out, labels)
    second = run_score(folders[1], out, labels)
    table = pd.read_parquet(out)
    assert sorted(Path(p).name for p in table.path) == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "clip3.mp4"]
    assert second["kept_from_earlier_runs"] == 2 and second["scored_now"] == 2
    assert pq.read_table(score.embeddings_path(out)).num_rows == 4
    capsys.readouterr()
    assert main(["score", str(folders[0]), "--out", str(out), "--labels", str(labels), "decode.num_frames=4",
                 "decode.workers=0", "top_k=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other settings" in err and "top_k: 3 then, 2 now" in err, err
    assert len(pd.read_parquet(out)) == 4  # the refused run changed nothing
    (folders[0] / "clip0.mp4").unlink()  # a file gone since: its row stays in the parts, not in the table
    run_score(folders[1], out, labels)
    assert sorted(Path(p).name for p in pd.read_parquet(out).path) == ["clip1.mp4", "clip2.mp4", "clip3.mp4"]
