"""`score` over WebDataset shards in video2dataset's layout (key.mp4, key.json, key.txt per sample), made here: the
rows equal those of the same videos scored as plain files (embeddings within 1e-6), each sample's key and json
carried, a failed download, a sample without a video and a shard cut short inside a video are error rows with the
reason while the rest is scored, per-shard outputs hold exactly the merged table's rows of their shard and are
published as each shard completes (a run stopped after the first has its files only; the resume publishes the rest
and does not rewrite it), a rerun (and one after a SIGKILL) scores only what is missing, bad patterns and non-tars
are one line (exit 2), shards in object storage (moto) and through the Ray engine give the same rows, and an object's
windows share one download."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import REPO, clips_and_labels
from ray_cluster import local_cluster
from test_object_storage import BUCKET, s3  # noqa: F401 -- moto's S3 server for the module

from coca_video.cli import main
from coca_video.config import load_config
from coca_video.data.results import PartStore, embeddings_path
from coca_video.data.shards import expand_braces, read_shard
from coca_video.tasks import score
from coca_video.video.source import open_video

MTIME = 1_700_000_000  # the tar headers' mtime, as video2dataset's writer stamps each member
BASE = ["decode.num_frames=2", "decode.batch_size=4", "decode.workers=0", "top_k=3", "model.image_size=32"]


def sample_json(key: str, index: int, status: str = "success", error: str | None = None) -> dict:
    """A sample's json as video2dataset writes it."""
    return {"url": f"https://example.com/v{index}.mp4", "caption": f"clip number {index}", "key": key,
            "status": status, "error_message": error, "clips": [[0.0, 1.0]],
            "video_metadata": {"streams": [{"codec_name": "h264"}]}}


def write_shard(path: Path, samples: list[tuple[str, bytes | None, dict | None, str | None]]) -> Path:
    """A tar of (key, mp4 bytes, json, caption) samples, members in video2dataset's order (mp4, json, txt)."""
    with tarfile.open(path, "w") as tar:
        for key, video, meta, caption in samples:
            for suffix, data in (("mp4", video), ("json", None if meta is None else json.dumps(meta).encode()),
                                 ("txt", None if caption is None else caption.encode())):
                if data is None:
                    continue
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size, info.mtime = len(data), MTIME
                tar.addfile(info, io.BytesIO(data))
    return path


def cut_inside(path: Path, member: str) -> None:
    """Cut the tar ``path`` in the middle of ``member``'s data, as a download stopped short would."""
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
    data = path.read_bytes()
    path.write_bytes(data[:info.offset_data + info.size // 2])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """5 clips as files, and as 3 shards: 00000 (clips 0-1), 00001 (clip 2, a failed download with no mp4, a sample
    with json but no mp4, clip 3), 00002 (clip 4, then clip 0 again cut short); keys -> clip file names."""
    root = tmp_path_factory.mktemp("clips")
    clips, labels = clips_and_labels(root, 5, size=48, num_frames=4, seed=3, fps=4)
    shards = root.parent / "shards"
    shards.mkdir()
    video = {i: (clips / f"clip{i}.mp4").read_bytes() for i in range(5)}
    names = {}

    def ok(index: int, clip: int):
        key = f"{index:09d}"
        names[key] = f"clip{clip}.mp4"
        return key, video[clip], sample_json(key, index), f"clip number {index}"

    write_shard(shards / "00000.tar", [ok(0, 0), ok(1, 1)])
    write_shard(shards / "00001.tar", [ok(10, 2), ("000000011", None, sample_json(
        "000000011", 11, "failed_to_download", "HTTP Error 404: Not Found"), "clip number 11"),
        ("000000012", None, sample_json("000000012", 12), "clip number 12"), ok(13, 3)])
    write_shard(shards / "00002.tar", [ok(20, 4), ok(21, 0)])
    cut_inside(shards / "00002.tar", "000000021.mp4")
    return shards, labels, names, clips


@pytest.fixture(scope="module")
def world(made):
    """The shards, the labels, the same clips scored as plain files (the reference), keys -> clip names, clips."""
    shards, labels, names, clips = made
    files = clips.parent / "files.parquet"
    run(clips, files, labels)
    return shards, labels, files, names, clips


def run(videos, out, labels, *overrides: str) -> dict:
    return score.run(load_config(score.ScoreConfig, None, [f"videos={videos}", f"out={out}", f"labels={labels}",
                                                           *BASE, *overrides]))


def rows_with_embeddings(out) -> list[dict]:
    """The merged table's rows with their embeddings from the sidecar, in the table's order."""
    rows = pq.read_table(out).to_pylist()
    sidecar = pq.read_table(embeddings_path(out)).to_pylist()
    assert [r["path"] for r in rows] == [r["path"] for r in sidecar]
    return [row | {"video_embedding": side["video_embedding"]} for row, side in zip(rows, sidecar)]


SCORED = ("duration", "num_frames", "fps", "top1_label", "top2_label", "top3_label")


@pytest.fixture(scope="module")
def scored(made, tmp_path_factory):
    """A straight run over the 3 shards with per-shard outputs: the reference of the runs stopped and resumed."""
    shards, labels, *_ = made
    out = tmp_path_factory.mktemp("scored") / "scores.parquet"
    summary = run(f"{shards}/{{00000..00002}}.tar", out, labels, "shard_outputs=true")
    return out, summary


@pytest.mark.slow
def test_shard_rows_equal_file_rows_and_carry_keys_json_and_reasons(world, scored):
    shards, _, files, names, clips = world
    out, summary = scored
    reference = {Path(row["path"]).name: row for row in rows_with_embeddings(files)}
    rows = {row["path"]: row for row in rows_with_embeddings(out)}
    assert summary["shards"] == 3 and summary["shards_published"] == 3
    ok = {path: row for path, row in rows.items() if row["status"] == "ok"}
    assert sorted(row["key"] for row in ok.values()) == ["000000000", "000000001", "000000010", "000000013",
                                                         "000000020"]
    for path, row in ok.items():
        tar, member = path.split("#")
        assert row["shard"] == tar and member == f"{row['key']}.mp4"
        want = reference[names[row["key"]]]
        assert {c: row[c] for c in SCORED} == {c: want[c] for c in SCORED}
        np.testing.assert_allclose(row["video_embedding"], want["video_embedding"], atol=1e-6)
        np.testing.assert_allclose(row["top1_score"], want["top1_score"], atol=1e-6)
        assert json.loads(row["meta"]) == sample_json(row["key"], int(row["key"]))
    errors = {(row["key"], row["error"].split(": ", 1)[1]) for row in rows.values() if row["status"] != "ok"}
    assert errors == {("000000011", "failed_to_download: HTTP Error 404: Not Found"),
                      ("000000012", "no video in the sample (members .mp4, .avi, .mkv...: none)"),
                      ("000000021", "cut short: the tar ends inside 000000021.mp4 (%d bytes)"
                       % (clips / "clip0.mp4").stat().st_size),
                      (None, "cut short or damaged after 4 members (unexpected end of data): the members after them are lost")}


@pytest.mark.slow
def test_per_shard_outputs_hold_the_merged_rows_of_their_shard(world, scored):
    shards, *_ = world
    out, _ = scored
    merged = rows_with_embeddings(out)
    counts = {"00000": (2, 2, 0, 0), "00001": (4, 2, 1, 1), "00002": (2, 1, 0, 1)}
    for name, (count, successes, failed_to_download, failed_to_score) in counts.items():
        tar = str(shards / f"{name}.tar")
        published = pq.read_table(out.parent / f"{name}.parquet").to_pylist()
        mine = {row["path"]: row for row in merged if row["shard"] == tar}
        assert sorted(row["path"] for row in published) == sorted(mine)
        for row in published:
            want = mine[row["path"]]
            assert {c: row[c] for c in want if c != "video_embedding"} == \
                {c: want[c] for c in want if c != "video_embedding"}
            assert (row["video_embedding"] is None) == (want["video_embedding"] is None)
            if want["video_embedding"] is not None:
                np.testing.assert_array_equal(np.float32(row["video_embedding"]), np.float32(want["video_embedding"]))
        stats = json.loads((out.parent / f"{name}_stats.json").read_text())
        assert (stats["count"], stats["successes"], stats["failed_to_download"], stats["failed_to_score"]) == \
            (count, successes, failed_to_download, failed_to_score)
        assert sum(stats["status_dict"].values()) == count and stats["status_dict"].get("success", 0) == successes
    assert json.loads((out.parent / "00002_stats.json").read_text())["shard_error"].startswith("cut short")


class Stop(Exception):
    """Stops a run where a test says, as a kill or Ctrl-C would."""


def shard_files(folder: Path) -> dict[str, tuple[int, int]]:
    """The per-shard outputs in ``folder``: name -> (inode, mtime in ns), which a rewrite changes."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if p.name.startswith("0000") and p.suffix in (".parquet", ".json")}


def assert_same_shard_files(folder: Path, straight: Path, names: list[str]) -> None:
    """Each of shard ``names``' files in ``folder`` holds what the straight run wrote (embeddings and scores within
    1e-6, the rest equal); its stats equal."""
    for name in names:
        got, want = (pq.read_table(where / f"{name}.parquet").to_pylist() for where in (folder, straight))
        assert [row["path"] for row in got] == [row["path"] for row in want]
        assert_same_samples({row["path"]: row for row in got}, {row["path"]: row for row in want})
        assert (folder / f"{name}_stats.json").read_text() == (straight / f"{name}_stats.json").read_text()


def test_each_shard_is_published_as_it_completes_and_a_resume_publishes_the_rest(made, scored, tmp_path,
                                                                               monkeypatch):
    """A run stopped as it starts scoring shard 00001 (one batch per shard) has already published 00000, as a
    straight run writes it, and nothing else (not even the merged table); the resumed run publishes 00001 and 00002
    without rewriting 00000, and every table equals the straight run's."""
    from coca_video.engines import local

    shards, labels, *_ = made
    out, straight = tmp_path / "scores.parquet", scored[0].parent
    scored_batch, seen = local.batch_rows, {}

    def stop_at_shard_1(scorer, batch, todo, per_frame=False):
        if any("00001.tar#" in todo[i].key[0] for i in batch.indices):
            seen.update(files=shard_files(tmp_path), merged=out.exists())
            raise Stop
        return scored_batch(scorer, batch, todo, per_frame)

    monkeypatch.setattr(local, "batch_rows", stop_at_shard_1)
    pattern = f"{shards}/{{00000..00002}}.tar"
    with pytest.raises(Stop):
        run(pattern, out, labels, "shard_outputs=true", "decode.batch_size=2")
    assert not seen["merged"]  # published while the run went on
    assert set(seen["files"]) == {"00000.parquet", "00000_stats.json"}
    assert shard_files(tmp_path) == seen["files"]  # nothing more when the stopped run ends
    assert_same_shard_files(tmp_path, straight, ["00000"])
    monkeypatch.setattr(local, "batch_rows", scored_batch)
    summary = run(pattern, out, labels, "shard_outputs=true", "decode.batch_size=2")
    assert (summary["scored_now"], summary["already_scored"], summary["shards_published"]) == (4 + 3, 2, 3)
    published = shard_files(tmp_path)
    assert {name: published[name] for name in seen["files"]} == seen["files"]  # 00000 not written again
    assert len(published) == 6
    assert_same_shard_files(tmp_path, straight, ["00000", "00001", "00002"])
    assert_same_samples(by_sample(out), by_sample(scored[0]))


@pytest.mark.slow
def test_a_rerun_scores_nothing_again_and_names_json_fields_as_columns(world, scored, tmp_path):
    shards, labels, *_ = world
    out = tmp_path / "scores.parquet"  # a copy of the scored output: the other tests read the original
    for name in ("scores.parquet", "scores.embeddings.parquet", "scores.parquet.parts"):
        (shutil.copytree if name.endswith(".parts") else shutil.copy)(scored[0].parent / name, tmp_path / name)
    before = pq.read_table(out).to_pylist()
    again = run(f"{shards}/{{00000..00002}}.tar", out, labels,
                "shard_outputs=true", "shard_fields=url,caption")
    assert again["scored_now"] == again["errors_now"] == 4  # only the error rows of unreadable samples, rewritten
    after = pq.read_table(out).to_pylist()
    assert [row["path"] for row in after] == [row["path"] for row in before]
    for old, new in zip(before, after):
        meta = json.loads(old["meta"]) if old["meta"] else {}
        assert (new["url"], new["caption"]) == (meta.get("url"), meta.get("caption"))
        assert "meta" not in new and new["key"] == old["key"]
    assert "url" in pq.read_schema(out.parent / "00001.parquet").names


def test_a_shard_is_read_in_place_with_each_samples_reason(made):
    shards, *_ = made
    mixed = read_shard(str(shards / "00001.tar"))
    assert [(s.key, s.video.name if s.video else None, s.problem) for s in mixed.samples] == [
        ("000000010", "000000010.mp4", None),
        ("000000011", None, "failed_to_download: HTTP Error 404: Not Found"),
        ("000000012", None, "no video in the sample (members .mp4, .avi, .mkv...: none)"),
        ("000000013", "000000013.mp4", None)]
    assert mixed.problem is None and mixed.samples[3].text == "clip number 13"
    assert mixed.samples[0].meta == sample_json("000000010", 10)
    with open_video(mixed.samples[3].path) as reader:  # decoded from the member, as the file it was made from
        assert reader.num_frames == 4
    cut = read_shard(str(shards / "00002.tar"))
    assert [(s.key, s.problem is None) for s in cut.samples] == [("000000020", True), ("000000021", False)]
    assert cut.problem.startswith("cut short or damaged after 4 members")


def test_a_damaged_header_keeps_the_samples_before_it(made, tmp_path):
    shards, *_ = made
    damaged = tmp_path / "00001.tar"
    data = bytearray((shards / "00001.tar").read_bytes())
    with tarfile.open(shards / "00001.tar") as tar:
        offset = tar.getmember("000000012.json").offset  # the header of the third sample's json
    data[offset:offset + 512] = b"garbage!" * 64
    damaged.write_bytes(bytes(data))
    shard = read_shard(str(damaged))
    assert [s.key for s in shard.samples] == ["000000010", "000000011"]
    assert shard.problem == f"damaged header at byte {offset}: the members after it are lost"


def test_brace_patterns_expand_in_order_zero_padded():
    assert expand_braces("s/{00008..00011}.tar") == ["s/00008.tar", "s/00009.tar", "s/00010.tar", "s/00011.tar"]
    assert expand_braces("{a,b}-{0..1}.tar") == ["a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"]


def one_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_pattern_matching_nothing_and_a_file_that_is_not_a_tar_are_one_line(made, tmp_path, capsys):
    shards, labels, *_ = made
    pattern = f"{shards}/{{00007..00009}}.tar"
    assert pattern in one_line(capsys, ["score", pattern, "--labels", str(labels), "--out", str(tmp_path / "a.parquet")])
    fake = tmp_path / "00000.tar"
    fake.write_bytes(b"this is not a tar archive, only text " * 40)
    err = one_line(capsys, ["score", str(fake), "--labels", str(labels), "--out", str(tmp_path / "b.parquet")])
    assert str(fake) in err and "not a tar" in err


def test_per_shard_outputs_beside_the_input_shards_are_refused(made, capsys):
    shards, labels, *_ = made
    err = one_line(capsys, ["score", str(shards / "00000.tar"), "--labels", str(labels),
                            "--out", str(shards / "scores.parquet"), "shard_outputs=true"])
    assert "holds the input shard" in err


@pytest.mark.slow
def test_a_sigkilled_run_resumes_scoring_only_what_is_missing(world, tmp_path):
    """A run killed once its first batch is stored; the rerun scores the rest only, and the rows equal a straight
    run's."""
    shards, labels, files, _, clips = world
    many = tmp_path / "many"
    many.mkdir()
    videos = [(clips / f"clip{i}.mp4").read_bytes() for i in range(5)]
    write_shard(many / "00000.tar", [(f"{i:09d}", videos[i % 5], sample_json(f"{i:09d}", i), None)
                                     for i in range(10)])
    out = tmp_path / "scores.parquet"
    command = [sys.executable, "-m", "coca_video", "score", str(many / "00000.tar"), "--labels", str(labels),
               "--out", str(out), *BASE, "decode.batch_size=1"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not PartStore(out).parts() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    stored = len(PartStore(out).done_keys())
    if stored == 10:
        pytest.skip("the run finished before the kill (a machine faster than expected)")
    summary = run(many / "00000.tar", out, labels, "decode.batch_size=1")
    assert summary["scored_now"] == 10 - stored and summary["already_scored"] == stored
    reference = {Path(row["path"]).name: row for row in rows_with_embeddings(files)}
    for row in rows_with_embeddings(out):
        want = reference[f"clip{int(row['key']) % 5}.mp4"]
        np.testing.assert_allclose(row["video_embedding"], want["video_embedding"], atol=1e-6)


def by_sample(out) -> dict[tuple[str, str | None], dict]:
    """Rows keyed by (shard file name, sample key), the paths and keys that differ between copies dropped."""
    rows = {}
    for row in rows_with_embeddings(out):
        name = row["shard"].rsplit("/", 1)[-1]
        rows[name, row["key"]] = {c: v for c, v in row.items() if c not in ("path", "shard", "size", "mtime", "error")}
        rows[name, row["key"]]["error"] = row["error"].replace(row["path"], "<path>")
    return rows


def assert_same_samples(got, want) -> None:
    assert set(got) == set(want)
    for key, row in want.items():
        assert list(got[key]) == list(row), key
        for column, value in row.items():
            if column == "video_embedding" or column.endswith("_score"):
                assert (got[key][column] is None) == (value is None)
                if value is not None:
                    np.testing.assert_allclose(got[key][column], value, atol=1e-6)
            else:
                assert got[key][column] == value, (key, column)


@pytest.mark.slow
def test_shards_in_object_storage_give_the_local_shards_rows(s3, made, scored, tmp_path):
    shards, labels, *_ = made
    import fsspec

    fs = fsspec.filesystem("s3", use_listings_cache=False)
    for name in ("00000.tar", "00001.tar", "00002.tar"):
        fs.put_file(str(shards / name), f"{BUCKET}/shards/{name}")
    out = tmp_path / "scores.parquet"
    summary = run(f"s3://{BUCKET}/shards/{{00000..00002}}.tar", out, labels)
    assert summary["shards"] == 3
    assert_same_samples(by_sample(out), by_sample(scored[0]))
    prefix = run(f"s3://{BUCKET}/shards/", out, labels)  # the prefix names the same shards: nothing left to score
    assert prefix["already_scored"] == 5 and prefix["scored_now"] == prefix["errors_now"]


@pytest.mark.slow
def test_an_objects_windows_share_one_download(s3, made, tmp_path, monkeypatch):
    """A video in object storage scored as 4 windows (one batch) is downloaded twice, once to work out its windows
    and once for the batch that decodes them, not once per window."""
    from coca_video.video import source

    _, labels, _, clips = made
    import fsspec

    url = f"s3://{BUCKET}/windows/clip0.mp4"
    fsspec.filesystem("s3", use_listings_cache=False).put_file(str(clips / "clip0.mp4"), url.removeprefix("s3://"))
    downloads, download = [], source.local_copy
    monkeypatch.setattr(source, "local_copy", lambda path, timeout: downloads.append(path) or download(path, timeout))
    summary = run(url, tmp_path / "scores.parquet", labels, "segment_seconds=0.25")
    assert (summary["scored_now"], summary["errors_now"]) == (4, 0)
    assert downloads == [url, url]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module's Ray tests: their runs join it (a run started while Ray is connected
    uses that connection) instead of each starting its own."""
    with local_cluster() as ray:
        yield ray


RAY = ["engine=ray", "ray.decode_actors=1", "ray.encode_actors=1", "ray.max_retries=1"]


@pytest.mark.slow
@pytest.mark.needs("ray")
def test_the_ray_engine_publishes_each_shard_as_it_completes_and_gives_the_local_engines_rows(cluster, made, scored,
                                                                                             tmp_path, monkeypatch):
    """Stopped in the driver once the first shard (whichever the actors finish first) is published: that shard's
    files are there, as the local engine's straight run wrote them, before any other's and before the merged table;
    the resumed run on Ray scores the rest, publishes the other shards without rewriting it, and every table equals
    the local engine's."""
    from coca_video.tasks import score_shards

    shards, labels, *_ = made
    out, straight = tmp_path / "scores.parquet", scored[0].parent
    write_text, seen = score_shards.atomic_write_text, {}

    def stop_after_first_shard(path, text):
        written = write_text(path, text)  # a shard's stats: written after its table
        if not seen:
            seen.update(files=shard_files(tmp_path), merged=out.exists())
            raise Stop
        return written

    monkeypatch.setattr(score_shards, "atomic_write_text", stop_after_first_shard)
    pattern = f"{shards}/{{00000..00002}}.tar"
    with pytest.raises(Stop):
        run(pattern, out, labels, "shard_outputs=true", "decode.batch_size=1", *RAY)
    first = sorted(seen["files"])[0].removesuffix(".parquet")
    assert not seen["merged"]  # published while the run went on
    assert sorted(seen["files"]) == [f"{first}.parquet", f"{first}_stats.json"]
    monkeypatch.setattr(score_shards, "atomic_write_text", write_text)
    summary = run(pattern, out, labels, "shard_outputs=true", "decode.batch_size=1", *RAY)
    assert summary["errors_now"] == 4  # the rows of samples and shards not decoded, written again
    assert (summary["scored_now"] - 4 + summary["already_scored"], summary["shards_published"]) == (5, 3)
    published = shard_files(tmp_path)
    assert {name: published[name] for name in seen["files"]} == seen["files"] and len(published) == 6
    assert_same_shard_files(tmp_path, straight, ["00000", "00001", "00002"])
    assert_same_samples(by_sample(out), by_sample(scored[0]))


@pytest.mark.slow
def test_retrieval_on_shard_captions_equals_retrieval_on_the_same_clips_and_captions(world, tmp_path):
    """source.shards: each usable sample's video with its .txt as the reference, as a CSV of the same clips would."""
    from coca_video.tasks import retrieval

    shards, _, _, names, clips = world
    table = tmp_path / "captions.csv"
    table.write_text("video,caption\n" + "".join(f"{clips / clip},clip number {int(key)}\n"
                                                 for key, clip in sorted(names.items()) if key != "000000021"))
    common = ["decode.num_frames=2", "decode.workers=0", "model.image_size=32", "report_queries=0"]
    results = {}
    for name, source in (("csv", f"source.captions={table}"), ("shards", f"source.shards={shards}/{{00000..00002}}.tar")):
        cfg = load_config(retrieval.RetrievalConfig, None, [source, f"out={tmp_path / name}.json", *common])
        results[name] = retrieval.run(cfg)
    assert results["shards"]["protocol"]["videos"] == results["csv"]["protocol"]["videos"] == 5
    for direction in ("t2v", "v2t"):
        assert results["shards"][direction] == pytest.approx(results["csv"][direction], abs=1e-6)
