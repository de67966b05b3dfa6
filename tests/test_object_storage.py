"""Inputs and outputs in object storage, against a real S3 API: moto's server on 127.0.0.1, one per module, reached
the way users reach MinIO or another S3 endpoint (``AWS_ENDPOINT_URL`` and the usual AWS credential variables).
``score`` lists an ``s3://`` prefix, decodes its objects, writes its parts, ``--out`` and embeddings there, resumes
from those parts, gives a missing object an error row, refuses bad credentials and a missing bucket in one line, and
the Ray engine's rows equal the local engine's on the same objects."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ray_cluster import local_cluster

from coca_video.cli import main
from coca_video.config import load_config
from coca_video.errors import DataError
from coca_video.data.results import embeddings_path
from coca_video.data.synthetic import COLOURS, SyntheticVideos
from coca_video.tasks import score
from coca_video.video import write_video

CLIPS = 4
BUCKET = "coca-test"
KEYS = ("path", "size", "mtime")  # differ between a local copy and its object (the path, the object's own times)


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free port of 127.0.0.1 for the module, and the environment a user would set for it;
    skipped only when the server cannot be started here (its package missing, no socket)."""
    try:
        import s3fs  # noqa: F401 -- what score needs for s3:// (the s3 extra)
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
    except Exception as err:  # noqa: BLE001 -- pip install -e '.[s3-test]' (make test does)
        pytest.skip(f"moto's S3 server does not start here ({type(err).__name__}: {err})")
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    import requests  # moto's own dependency
    import s3fs

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        import fsspec

        s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps filesystems, with the endpoint of another module's server
        requests.post(f"http://{host}:{port}/moto-api/reset", timeout=30)  # moto's buckets are the process's
        fsspec.filesystem("s3").mkdir(BUCKET)
        try:
            yield env
        finally:
            server.stop()
            s3fs.S3FileSystem.clear_instance_cache()


def s3fs_():
    import fsspec

    return fsspec.filesystem("s3", use_listings_cache=False)


@pytest.fixture(scope="module")
def world(s3, tmp_path_factory) -> tuple[Path, Path, str]:
    """``CLIPS`` small clips and a corrupt file, locally and as objects under ``s3://coca-test/videos/`` (with a
    hidden object and a text file that are not videos); the colour labels."""
    root = tmp_path_factory.mktemp("videos")
    clips = SyntheticVideos(CLIPS + 1, size=48, num_frames=4, seed=7, split="test", p_reference=0.0)
    for i in range(CLIPS + 1):  # the last one is added to the bucket later, by the resume test
        write_video(root / f"clip{i:02d}.mp4", clips[i][0], fps=4)
    (root / "broken.mp4").write_bytes(b"not a video at all")
    fs = s3fs_()
    for i in range(CLIPS):
        fs.put_file(str(root / f"clip{i:02d}.mp4"), f"{BUCKET}/videos/clip{i:02d}.mp4")
    fs.put_file(str(root / "broken.mp4"), f"{BUCKET}/videos/broken.mp4")
    fs.pipe_file(f"{BUCKET}/videos/.hidden/clip.mp4", b"not listed")
    fs.pipe_file(f"{BUCKET}/videos/notes.txt", b"not a video")
    labels = root.parent / "colours.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    return root, labels, f"s3://{BUCKET}/videos/"


def run_score(videos: str | Path, out: str | Path, labels: Path, *overrides: str) -> dict:
    base = [f"videos={videos}", f"out={out}", f"labels={labels}", "decode.num_frames=4", "decode.batch_size=2",
            "decode.workers=0", "top_k=3", "decode.timeout=60"]
    return score.run(load_config(score.ScoreConfig, None, [*base, *overrides]))


def read_s3_table(url: str):
    return pq.read_table(url.removeprefix("s3://"), filesystem=s3fs_()).to_pandas()


def by_name(table):
    """Rows keyed by file name (a local path and its object share it), key columns dropped."""
    table = table.assign(name=table.path.map(lambda p: p.rsplit("/", 1)[-1]),  # the reason names the path or URL
                         error=[e.replace(p, "<file>") for e, p in zip(table.error, table.path)])
    return table.drop(columns=[c for c in KEYS if c in table.columns]).set_index("name").sort_index()


def assert_rows_equal(got, want) -> None:
    got, want = by_name(got), by_name(want)
    assert got.index.tolist() == want.index.tolist() and list(got.columns) == list(want.columns)
    for column in want.columns:
        if column.endswith("_score"):
            np.testing.assert_allclose(got[column], want[column], atol=1e-6)
        elif column == "video_embedding":
            for a, b in zip(got[column], want[column]):
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_allclose(a, b, atol=1e-6)
        else:
            assert got[column].equals(want[column]), column


@pytest.fixture(scope="module")
def local_rows(world, tmp_path_factory):
    """The local engine's rows for the same clips read from local files: the reference."""
    root, labels, _ = world
    folder = tmp_path_factory.mktemp("local-copy")
    for name in [f"clip{i:02d}.mp4" for i in range(CLIPS)] + ["broken.mp4"]:
        shutil.copy(root / name, folder / name)
    out = folder.parent / "local.parquet"
    run_score(folder, out, labels)
    rows = pq.read_table(out).to_pandas()
    rows["video_embedding"] = pq.read_table(embeddings_path(out)).column("video_embedding").to_pylist()
    return rows


def s3_rows(out: str):
    rows = read_s3_table(out)
    sidecar = read_s3_table(str(embeddings_path(out)))
    assert sidecar.path.tolist() == rows.path.tolist()
    rows["video_embedding"] = sidecar.video_embedding.map(lambda v: None if v is None else list(v))
    return rows


@pytest.mark.slow
def test_a_prefix_is_listed_decoded_written_and_resumed_in_s3(world, local_rows, tmp_path, monkeypatch):
    root, labels, videos = world
    monkeypatch.chdir(tmp_path)  # nothing may land in a local folder named after the URL
    out = f"s3://{BUCKET}/runs/a/scores.parquet"
    summary = run_score(videos, out, labels)
    assert (summary["videos"], summary["scored_now"], summary["errors_now"]) == (CLIPS + 1, CLIPS + 1, 1)
    rows = s3_rows(out)
    assert rows.path.tolist() == sorted(f"{videos}{n}" for n in [f"clip{i:02d}.mp4" for i in range(CLIPS)] +
                                        ["broken.mp4"])  # not the hidden object, not the text file
    assert_rows_equal(rows, local_rows)
    fs = s3fs_()
    info = fs.info(f"{BUCKET}/videos/clip00.mp4")
    first = rows.set_index("path").loc[f"{videos}clip00.mp4"]
    assert (first["size"], first.mtime) == (info["size"], info["LastModified"].timestamp())
    assert "broken.mp4" in rows.set_index("path").loc[f"{videos}broken.mp4"].error
    parts = sorted(fs.ls(f"{BUCKET}/runs/a/scores.parquet.parts"))
    assert any(p.endswith("settings.json") for p in parts) and not any(p.endswith(".lock") for p in parts)
    assert list(tmp_path.iterdir()) == []
    assert not [p for p in fs.find(f"{BUCKET}/runs/a") if p.rsplit("/", 1)[-1].startswith(".")]  # no probe left

    fs.put_file(str(root / f"clip{CLIPS:02d}.mp4"), f"{BUCKET}/videos/clip{CLIPS:02d}.mp4")
    again = run_score(videos, out, labels)  # the new object, and the broken one again (errors are retried)
    assert (again["scored_now"], again["errors_now"], again["already_scored"]) == (2, 1, CLIPS)
    assert len(s3_rows(out)) == CLIPS + 2 and (s3_rows(out).status == "ok").sum() == CLIPS + 1
    fs.rm_file(f"{BUCKET}/videos/clip{CLIPS:02d}.mp4")


@pytest.mark.slow
def test_a_list_of_urls_gives_a_missing_object_its_error_row(world, local_rows, tmp_path):
    _, labels, videos = world
    listed = tmp_path / "videos.txt"  # a local list of URLs
    listed.write_text(f"{videos}clip00.mp4\n{videos}clip01.mp4\n{videos}gone.mp4\n")
    out = f"s3://{BUCKET}/runs/b/scores.parquet"
    summary = run_score(listed, out, labels, f"report={tmp_path / 'report.html'}", "decode.workers=1")  # forked
    assert (summary["scored_now"], summary["errors_now"]) == (3, 1)
    page = (tmp_path / "report.html").read_text()  # a local report of the objects: their thumbnails, their URLs
    assert page.count("<img") >= 2 and f"href='{videos}clip00.mp4'" in page
    rows = s3_rows(out).set_index("path")
    gone = rows.loc[f"{videos}gone.mp4"]
    assert gone.status == "error" and gone.error == f"{videos}gone.mp4: object not found", gone.error
    assert_rows_equal(rows.drop(index=f"{videos}gone.mp4").reset_index(),
                      local_rows[local_rows.path.str.contains("clip0[01]")])

    s3_list = f"s3://{BUCKET}/lists/some.txt"  # a list object, its entries relative to its own prefix
    s3fs_().pipe_file(s3_list.removeprefix("s3://"), b"../videos/clip00.mp4\n# a comment\n")
    local_out = tmp_path / "from-list.parquet"
    with pytest.raises(DataError, match="no input could be scored .*object not found"):  # S3 keys keep "..": none
        run_score(s3_list, local_out, labels)  # of the list's inputs exists, so the run is refused, its row kept
    assert pq.read_table(local_out).column("path").to_pylist() == [f"s3://{BUCKET}/lists/../videos/clip00.mp4"]


def test_a_decode_helper_started_under_other_variables_downloads_with_the_current_ones(world):
    from coca_video.data.video import open_video
    from coca_video.video import isolate

    _, _, videos = world
    with pytest.MonkeyPatch.context() as patch:  # the helper lives on: here it starts with a wrong endpoint
        patch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        assert isolate.call_with_timeout(os.getpid, 30) != os.getpid()
    with open_video(f"{videos}clip00.mp4", timeout=60) as reader:
        assert reader.num_frames == 4 and reader.get_frames([0, 3]).shape[0] == 2


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with a single line on stderr (no traceback), which is returned."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    print(lines[0])
    return lines[0]


FAST = ["decode.workers=0", "decode.num_frames=2", "decode.batch_size=2"]


def test_a_missing_bucket_is_one_line(world, tmp_path, capsys):
    _, _, videos = world
    line = one_line_error(capsys, ["score", "s3://no-such-bucket/videos/", "--out", str(tmp_path / "s.parquet"),
                                   *FAST])
    assert "s3://no-such-bucket/videos/" in line and "bucket not found" in line, line
    line = one_line_error(capsys, ["score", videos, "--out", "s3://no-such-bucket/s.parquet", *FAST])
    assert "s3://no-such-bucket/s.parquet" in line and "bucket not found" in line, line
    assert not (tmp_path / "s.parquet").exists()


def test_bad_credentials_are_one_line(s3, world, tmp_path, capsys):
    _, _, videos = world
    reset_auth(s3, "0")  # from now on the server checks every request's credentials: "testing" is no IAM key
    try:
        line = one_line_error(capsys, ["score", videos, "--out", str(tmp_path / "s.parquet"), *FAST])
    finally:
        reset_auth(s3, "inf")
    assert videos in line and "access denied" in line and "credentials" in line, line


def reset_auth(env: dict[str, str], count: str) -> None:
    """moto's switch for checking credentials: after ``count`` more requests every one is authenticated."""
    request = urllib.request.Request(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset-auth", data=count.encode(),
                                     method="POST", headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=30).read()


def test_a_second_driver_into_the_same_s3_out_is_refused(world, tmp_path, capsys):
    from coca_video.data.results import PartStore

    _, _, videos = world
    out = f"s3://{BUCKET}/runs/c/scores.parquet"
    with PartStore(out).locked():  # another driver holds the output (its lock object exists)
        line = one_line_error(capsys, ["score", videos, "--out", out, *FAST])
    assert "being written by pid" in line and out in line, line
    assert not s3fs_().exists(f"{BUCKET}/runs/c/scores.parquet")

    lock = f"{BUCKET}/runs/c/scores.parquet.parts/rank0.lock"  # a driver on this host that was SIGKILLed
    s3fs_().pipe_file(lock, f"{2 ** 31 - 1} {socket.gethostname()}\n".encode())  # no such pid
    listed = tmp_path / "one.txt"
    listed.write_text(f"{videos}clip00.mp4\n")
    with pytest.warns(UserWarning, match="stale lock"):
        assert main(["score", str(listed), "--out", out, *FAST]) == 0
    assert s3fs_().exists(f"{BUCKET}/runs/c/scores.parquet") and not s3fs_().exists(lock)


def test_a_failed_write_leaves_no_object_at_the_key(s3, monkeypatch):
    import pyarrow as pa

    import coca_video.io as io

    def half_then_fail(table, path):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("disk gone")

    monkeypatch.setattr(io, "write_parquet", half_then_fail)
    url = f"s3://{BUCKET}/runs/d/table.parquet"
    with pytest.raises(OSError, match="disk gone"):
        io.atomic_write_table(pa.table({"a": [1]}), url)
    assert not s3fs_().exists(url.removeprefix("s3://"))


@pytest.mark.slow
@pytest.mark.needs("ray")
def test_ray_rows_equal_local_rows_on_s3(s3, world, local_rows):
    _, labels, videos = world
    with local_cluster(**s3):  # of its own: its workers need the S3 server's address and keys
        out = f"s3://{BUCKET}/runs/ray/scores.parquet"
        summary = run_score(videos, out, labels, "engine=ray", "ray.decode_actors=1", "ray.encode_actors=1",
                            "ray.max_retries=1")
    assert (summary["scored_now"], summary["errors_now"]) == (CLIPS + 1, 1)
    rows = s3_rows(out)
    assert rows.path.tolist() == sorted(f"{videos}{n}" for n in by_name(local_rows).index)
    assert_rows_equal(rows, local_rows)  # the local engine on local copies of the same files


@pytest.mark.slow
def test_dedup_reads_an_embeddings_file_from_s3(s3, tmp_path, capsys):
    """The same scene rows deduplicated from a local embeddings file and from its object: the same table; a missing
    object is one line naming it."""
    pytest.importorskip("sklearn")
    import pyarrow as pa

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 16)).astype(np.float32)
    vectors[7] = vectors[2] + 0.001  # a scene of b.mp4 repeats one of a.mp4's
    table = pa.table({"path": [f"{'ab'[i // 6]}.mp4" for i in range(12)],
                      "segment_start": [float(i % 6) for i in range(12)],
                      "segment_end": [float(i % 6 + 1) for i in range(12)],
                      "video_embedding": list(vectors)})
    local = tmp_path / "scenes.embeddings.parquet"
    pq.write_table(table, local)
    url = f"s3://{BUCKET}/runs/dedup/scenes.embeddings.parquet"
    s3fs_().put_file(str(local), url.removeprefix("s3://"))
    for source, out in ((local, tmp_path / "local.parquet"), (url, tmp_path / "s3.parquet")):
        assert main(["dedup", str(source), "--out", str(out), "--clusters", "2"]) == 0
    got, want = (pq.read_table(tmp_path / f"{name}.parquet").to_pandas() for name in ("s3", "local"))
    columns = ["path", "segment_start", "keep", "duplicate_of", "duplicate_of_start"]
    assert got[columns].equals(want[columns]) and (~got.keep).sum() == 1
    gone = got[~got.keep].iloc[0]
    assert {(gone.path, gone.segment_start), (gone.duplicate_of, gone.duplicate_of_start)} == {("a.mp4", 2.0),
                                                                                             ("b.mp4", 1.0)}
    line = one_line_error(capsys, ["dedup", f"s3://{BUCKET}/runs/none.parquet", "--out", str(tmp_path / "n.parquet")])
    assert f"s3://{BUCKET}/runs/none.parquet" in line and "not found" in line, line


@pytest.mark.slow
def test_scenes_of_s3_objects_are_cut(world, tmp_path):
    """segment_by=scenes on an s3:// prefix: each clip (no cut in 4 frames) is one scene from 0 to its duration, the
    corrupt object an error row."""
    pytest.importorskip("scenedetect")
    _, labels, videos = world
    summary = run_score(videos, tmp_path / "scenes.parquet", labels, "segment_by=scenes")
    rows = pq.read_table(tmp_path / "scenes.parquet").to_pandas().set_index("path")
    assert summary["scored_now"] == len(rows) == CLIPS + 1
    assert rows.loc[f"{videos}broken.mp4"].status == "error"
    ok = rows[rows.status == "ok"]
    assert (ok.segment_start == 0).all() and np.allclose(ok.segment_end, ok.duration)
