"""`score --engine ray` against the local engine on the same inputs, on one local Ray cluster for the module: the
same rows (keys, error rows, labels, embeddings; segments and fps rows too), resume from the same parts, an encode or
decode actor that dies mid-run still leaves every row exactly once (and the decode helper dies with its actor), a
SIGKILLed driver leaves no process of its cluster and its rerun scores only what is missing, a second driver into
the same output is refused, and retrieval's metrics, captioning's captions and metrics and zeroshot's accuracy are the
same through either engine. (Node loss:
tests/test_ray_nodes.py, which needs a cluster of its own.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ray_cluster import local_cluster

from coca_video.config import load_config
from coca_video.data.results import PART_NAME, PartStore, embeddings_path
from coca_video.data.synthetic import COLOURS, SyntheticVideos, write_kinetics_format
from coca_video.engines import ray_engine
from coca_video.engines.ray_engine import PART_RANK_BASE
from coca_video.errors import OutputError
from coca_video.tasks import captioning, retrieval, score, zeroshot
from coca_video.video import write_video

REPO = Path(__file__).resolve().parents[1]
CLIPS = 10
# one decoder and two encoders (so two actors write parts at once) of the cluster's 4 logical CPUs
RAY = ["engine=ray", "ray.decode_actors=1", "ray.encode_actors=2", "ray.max_retries=2"]

pytestmark = [pytest.mark.needs("ray"), pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (4 logical CPUs, more than the 2 cores, so no pool waits for a CPU); its
    workers import this checkout, and this test module (for the crashing scorers below)."""
    with local_cluster() as ray:
        yield ray


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path, Path]:
    """10 small clips and a corrupt file; the colour labels; and the local engine's output on them."""
    root = tmp_path_factory.mktemp("videos")
    clips = SyntheticVideos(CLIPS, size=48, num_frames=4, seed=5, split="test", p_reference=0.0)
    for i in range(CLIPS):
        write_video(root / f"clip{i:02d}.mp4", clips[i][0], fps=4)
    (root / "broken.mp4").write_bytes(b"not a video at all")
    labels = root.parent / "colours.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    local = root.with_name(root.name + "-local") / "scores.parquet"  # of its own: test_ray_nodes makes a world too
    run_score(root, local, labels)
    return root, labels, local


def run_score(root: Path, out: Path, labels: Path, *overrides: str) -> dict:
    base = [f"videos={root}", f"out={out}", f"labels={labels}", "decode.num_frames=4", "decode.batch_size=3",
            "decode.workers=0", "top_k=3"]
    return score.run(load_config(score.ScoreConfig, None, [*base, *overrides]))


def assert_same_rows(out: Path, expected: Path) -> None:
    """``out`` holds exactly ``expected``'s rows: the same keys, statuses and errors, labels, scores and
    embeddings (within 1e-6), each key (path, and window for segment and fps rows) once."""
    got, want = pq.read_table(out).to_pandas(), pq.read_table(expected).to_pandas()
    keys = [c for c in ("path", "segment_start") if c in want.columns]
    assert not got.duplicated(keys).any() and list(got.columns) == list(want.columns)
    assert got[keys].equals(want[keys])
    for column in want.columns:
        if column.endswith("_score"):
            np.testing.assert_allclose(got[column], want[column], atol=1e-6)
        else:
            assert got[column].equals(want[column]), column
    got_e, want_e = pq.read_table(embeddings_path(out)), pq.read_table(embeddings_path(expected))
    assert got_e.schema == want_e.schema and got_e.schema.metadata == want_e.schema.metadata
    assert got_e.column("path").to_pylist() == want_e.column("path").to_pylist()
    for a, b in zip(got_e.column("video_embedding").to_pylist(), want_e.column("video_embedding").to_pylist()):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, atol=1e-6)


def part_rows(out: Path) -> int:
    """Rows in every part of ``out`` (a row written twice counts twice)."""
    return PartStore(out).stored_rows()


def part_ranks(out: Path) -> set[int]:
    folder = out.with_name(out.name + ".parts")
    return {int(m.group(1)) for p in folder.iterdir() if (m := PART_NAME.search(p.name))}


def test_workers_import_this_checkout(cluster):
    import coca_video

    where = cluster.get(cluster.remote(lambda: __import__("coca_video").__file__).remote())
    assert where == coca_video.__file__


def test_ray_rows_equal_local_rows_and_a_rerun_scores_nothing_new(cluster, world, tmp_path):
    root, labels, local = world
    out = tmp_path / "scores.parquet"
    summary = run_score(root, out, labels, *RAY)
    assert (summary["scored_now"], summary["errors_now"], summary["ok_total"]) == (CLIPS + 1, 1, CLIPS)
    assert_same_rows(out, local)
    ranks = part_ranks(out)
    # written by the encode actors, not this process; which of the two gets batches is Ray's choice (with both
    # fresh-clone suites running at once, one actor still loading its model took none)
    assert 1 <= len(ranks) <= 2 and min(ranks) >= PART_RANK_BASE
    broken = pq.read_table(out).to_pandas().set_index("path").loc[str(root / "broken.mp4")]
    assert broken.status == "error" and "broken.mp4" in broken.error

    parts = sorted(out.with_name(out.name + ".parts").iterdir())
    listed = tmp_path / "ok.txt"  # the files scored ok (an error row would be tried again, as locally)
    listed.write_text("".join(f"{p}\n" for p in sorted(root.glob("clip*.mp4"))))
    again = run_score(listed, out, labels, *RAY)
    assert (again["scored_now"], again["already_scored"]) == (0, CLIPS)
    assert sorted(out.with_name(out.name + ".parts").iterdir()) == parts
    assert_same_rows(out, local)  # the broken file's row is kept: it still exists


class DiesOnce:
    """The scorer of ``cfg`` whose first call in the whole run kills its process (os._exit, as a segfault would),
    leaving ``<out>.died`` to say it happened. Workers import it from this module (pickled by reference)."""

    def __init__(self, cfg) -> None:
        self.scorer, self.marker = real_actor_scorer(cfg), died_marker(cfg.out)

    def __call__(self, clips):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return self.scorer(clips)
        os._exit(1)

    def __getattr__(self, name):
        return getattr(self.scorer, name)


def died_marker(out: str | Path) -> Path:
    return Path(str(out) + ".died")


real_actor_scorer = score.build_scorer  # as imported, before any test replaces it


def test_a_killed_encode_actor_still_leaves_every_row_exactly_once(cluster, world, tmp_path, monkeypatch):
    root, labels, local = world
    out = tmp_path / "scores.parquet"
    monkeypatch.setattr(score, "build_scorer", DiesOnce)
    summary = run_score(root, out, labels, *RAY, "ray.encode_actors=1")  # the one encoder is restarted
    assert died_marker(out).exists()  # an encode actor did die on its first batch
    assert summary["ok_total"] == CLIPS
    assert_same_rows(out, local)
    assert part_rows(out) == CLIPS + 1  # it died before writing: nothing was scored twice


class EncoderDyingAfterItsFirstPart(ray_engine.Encoder):
    """An encode actor whose first batch in the whole run kills its process after the batch's part is written and
    before it replies (as losing its node at that moment would), leaving ``<out>.died``: Ray retries that batch."""

    def __call__(self, batch):
        counts = super().__call__(batch)
        try:
            os.close(os.open(died_marker(self.store.output), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return counts
        os._exit(1)


def test_a_batch_retried_after_its_part_was_written_is_not_scored_again(cluster, world, tmp_path, monkeypatch):
    root, labels, local = world
    out = tmp_path / "scores.parquet"
    monkeypatch.setattr(ray_engine, "Encoder", EncoderDyingAfterItsFirstPart)
    summary = run_score(root, out, labels, *RAY, "ray.encode_actors=1")
    assert died_marker(out).exists()  # the encode actor did die after writing its first part
    assert (summary["ok_total"], summary["scored_now"]) == (CLIPS, CLIPS + 1)
    assert_same_rows(out, local)
    assert part_rows(out) == CLIPS + 1  # the retried batch found its rows: none was written twice


def test_written_finds_a_whole_files_a_windows_and_an_fps_chunks_rows_of_this_run_only(tmp_path):
    from coca_video.scoring import ScoreItem

    out = tmp_path / "scores.parquet"
    row = {"size": 1, "mtime": 2.0, "status": "ok"}
    PartStore(out, rank=7).append([{"path": "old.mp4"} | row])  # an earlier run's
    PartStore(out, rank=PART_RANK_BASE + 1).append(
        [{"path": "whole.mp4", "segment_start": None} | row,
         {"path": "windows.mp4", "segment_start": 0.0} | row, {"path": "windows.mp4", "segment_start": 1.0} | row,
         {"path": "frames.mp4", "segment_start": 0.25} | row, {"path": "frames.mp4", "segment_start": 0.5} | row,
         {"path": "frames.mp4", "segment_start": 1.0} | row | {"status": "error"}])
    windows, frames = (ray_engine.Written(PartStore(out), frozenset({7}), per_frame=fps) for fps in (False, True))
    key = {name: (name, 1, 2.0) for name in ("old.mp4", "whole.mp4", "windows.mp4", "frames.mp4")}
    assert windows.statuses(ScoreItem(key["old.mp4"])) == []  # rows of earlier runs are not this run's
    assert windows.statuses(ScoreItem(key["whole.mp4"])) == ["ok"]
    assert windows.statuses(ScoreItem(key["windows.mp4"], 0.0, 2.0)) == ["ok"]  # overlapping windows: by start only
    assert windows.statuses(ScoreItem(key["windows.mp4"], 0.5, 2.5)) == []
    assert frames.statuses(ScoreItem(key["frames.mp4"], 0.0, 1.0)) == ["ok", "ok"]  # the frames inside the chunk
    assert frames.statuses(ScoreItem(key["frames.mp4"], 1.0, 2.0)) == ["error"]


class AlwaysDies(DiesOnce):
    """A scorer that kills its process on every call, a deterministic crash, leaving a ``<out>.died.<pid>`` file
    for each death."""

    def __call__(self, clips):
        Path(f"{self.marker}.{os.getpid()}").touch()
        os._exit(1)


def test_a_deterministic_crash_stops_the_run_after_max_retries_restarts(cluster, world, tmp_path, monkeypatch):
    root, labels, _ = world
    out = tmp_path / "scores.parquet"
    monkeypatch.setattr(score, "build_scorer", AlwaysDies)
    with pytest.raises(Exception) as failure:  # Ray's default would restart the actor and retry it forever
        run_score(root, out, labels, *RAY, "ray.encode_actors=1", "ray.max_retries=1")
    assert "actor" in str(failure.value).lower(), failure.value
    assert len(list(tmp_path.glob("scores.parquet.died.*"))) == 2  # the first actor and its one restart


def decoder_dying_once(marker: Path) -> type:
    """A decode actor class whose first decode in the whole run (a file ``marker`` made exclusively) ends with its
    process SIGKILLed, after writing its pid and its decode helper's to ``marker``. Defined here, so Ray ships it by
    value with the marker's path."""

    class DecoderDyingOnce(ray_engine.Decoder):
        def __call__(self, row):
            from coca_video.video import isolate

            record = super().__call__(row)
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return record
            os.write(fd, json.dumps({"actor": os.getpid(), "helper": isolate._helper.process.pid}).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    return DecoderDyingOnce


def gone(pids: list[int], seconds: float = 30) -> list[int]:
    """The ``pids`` still running (zombies count as gone) after waiting up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [pid for pid in pids if running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def described(pid: int) -> str:
    """A process's command line, and whether its environment holds a cluster token (the reaper's mark)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        marked = b"COCA_VIDEO_RAY_CLUSTER=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError as err:
        return f"{pid}: {err}"
    return f"{pid}: {command} (marked: {marked})"


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_killed_decode_actor_still_leaves_every_row_exactly_once_and_its_helper_dies(cluster, world, tmp_path,
                                                                                        monkeypatch):
    root, labels, local = world
    out, marker = tmp_path / "scores.parquet", tmp_path / "decoder.died"
    monkeypatch.setattr(ray_engine, "Decoder", decoder_dying_once(marker))
    summary = run_score(root, out, labels, *RAY, "ray.encode_actors=1")
    died = json.loads(marker.read_text())  # the decode actor was SIGKILLed with its helper running
    assert summary["ok_total"] == CLIPS
    assert_same_rows(out, local)
    assert part_rows(out) == CLIPS + 1  # its item was decoded again, and no row written twice
    assert gone([died["actor"], died["helper"]]) == []  # the helper did not outlive its actor


def test_a_second_driver_into_the_same_out_is_refused(world, tmp_path):
    root, labels, _ = world
    out = tmp_path / "scores.parquet"
    with PartStore(out).locked():  # the first driver's lock, held for its whole run
        with pytest.raises(OutputError, match="scores.parquet"):
            run_score(root, out, labels, *RAY)
    assert not PartStore(out).parts()


def test_segments_and_fps_rows_through_ray_equal_the_local_engines(cluster, world, tmp_path):
    root, labels, _ = world
    listed = tmp_path / "some.txt"  # three clips and the corrupt file
    listed.write_text("".join(f"{root / name}\n" for name in ("clip00.mp4", "clip01.mp4", "clip02.mp4", "broken.mp4")))
    for name, options in {"segments": ["segment_seconds=0.5"],
                          "fps": ["decode.sampling=fps", "decode.fps=4", "decode.num_frames=2"]}.items():
        want, got = tmp_path / name / "local.parquet", tmp_path / name / "ray.parquet"
        run_score(listed, want, labels, *options)
        summary = run_score(listed, got, labels, *options, *RAY, "ray.encode_actors=1")
        assert summary["scored_now"] > 4  # windows (or frame chunks), not whole files
        assert_same_rows(got, want)
        assert {"decode", "encode"} <= summary["stage_seconds"].keys()


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` now (children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return sorted(found)


def test_a_sigkilled_driver_leaves_no_ray_process_and_its_rerun_scores_only_what_is_missing(cluster, world,
                                                                                           tmp_path):
    """The driver, a command of its own as from a shell, starts its own local cluster: that start-up prints none of
    Ray's WARNING lines, and a SIGKILL to the driver leaves no process of that cluster behind."""
    root, labels, local = world
    out = tmp_path / "scores.parquet"
    command = [sys.executable, "-m", "coca_video.cli", "score", str(root), "--out", str(out), "--labels",
               str(labels), "--engine", "ray", "decode.num_frames=4", "decode.batch_size=1", "decode.workers=0",
               "top_k=3", "ray.decode_actors=1", "ray.encode_actors=1", "ray.num_cpus=3"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("COCA_VIDEO_ROOT_PID", None)  # the driver is its own run's root, as from a shell
    env.pop("RAY_AUTH_MODE", None)  # the default, under which Ray 2.60 warns that it turned token authentication on
    stderr = tmp_path / "driver.stderr"
    with open(stderr, "wb") as err:
        driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not PartStore(out).parts() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.poll() is None, "the driver ended before writing a part"
        started = descendants(driver.pid)  # its cluster: gcs_server, raylet, workers, decode helpers
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    assert len(started) >= 3
    # the cluster it started printed none of Ray's own start-up WARNING lines (issue #35: they stay out of the
    # user's terminal unless ray.verbose=true)
    lines = stderr.read_text(errors="replace").replace("\r", "\n").splitlines()
    assert not [line for line in lines if "WARNING" in line], lines[-20:]
    left = gone(started)
    assert left == [], [described(pid) for pid in left]  # nothing of the cluster it started outlives it
    done = len(PartStore(out).done_keys())  # the ok rows it wrote before it died
    summary = run_score(root, out, labels, *RAY)
    assert summary["scored_now"] == CLIPS + 1 - done  # the rest, and the broken file's error row again
    assert summary["already_scored"] == done
    assert_same_rows(out, local)


@pytest.fixture(scope="module")
def msrvtt(world) -> tuple[Path, Path]:
    """An MSR-VTT layout (videoN.mp4 and MSRVTT_data.json, all test split) of the module's clips, two captions
    each, and the corrupt file as one more video."""
    root, _, _ = world
    folder = root.with_name(root.name + "-msrvtt")
    folder.mkdir()
    clips = SyntheticVideos(CLIPS, size=48, num_frames=4, seed=5, split="test", p_reference=0.0)
    names = sorted(root.glob("clip*.mp4")) + [root / "broken.mp4"]
    sentences = []
    for i, source in enumerate(names):
        os.symlink(source, folder / f"video{i}.mp4")
        if i < CLIPS:
            scene = clips.scene(i)
            sentences += [{"video_id": f"video{i}", "caption": clips.caption(i)},
                          {"video_id": f"video{i}", "caption": f"a {scene.main.colour} {scene.main.shape}"}]
    sentences.append({"video_id": f"video{CLIPS}", "caption": "a red circle"})
    data = {"videos": [{"video_id": f"video{i}", "split": "test"} for i in range(len(names))], "sentences": sentences}
    (folder / "MSRVTT_data.json").write_text(json.dumps(data))
    return folder, folder / "MSRVTT_data.json"


def test_retrieval_metrics_are_equal_through_either_engine(cluster, msrvtt, tmp_path):
    videos, data = msrvtt
    results = {}
    for engine in ("local", "ray"):
        results[engine] = retrieval.run(load_config(retrieval.RetrievalConfig, None, [
            f"source.videos={videos}", f"source.msrvtt_data={data}", f"out={tmp_path / engine / 'metrics.json'}",
            "decode.num_frames=4", "decode.workers=0", "decode.batch_size=3", "report_queries=0",
            f"engine={engine}", "ray.decode_actors=1", "ray.encode_actors=1"]))
    local, ray = results["local"], results["ray"]
    assert [Path(p).name for p, _ in ray["protocol"]["failed_videos"]] == [f"video{CLIPS}.mp4"]
    assert ray["protocol"] == local["protocol"]
    for direction in [key for key in local if key.startswith(("t2v", "v2t"))]:
        assert ray[direction] == pytest.approx(local[direction], abs=1e-9), direction
    assert local["t2v"]["R1"] > 100 / CLIPS  # the default model tells the clips apart: a comparison that can fail


def test_captions_and_caption_metrics_are_equal_through_either_engine(cluster, msrvtt, tmp_path, monkeypatch):
    videos, data = msrvtt
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: the tokenizer's Python equal, METEOR left out
    results = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine / "metrics.json"
        results[engine] = captioning.run(load_config(captioning.CaptioningConfig, None, [
            f"source.videos={videos}", f"source.msrvtt_data={data}", f"out={out}", "decode.num_frames=4",
            "decode.workers=0", "decode.batch_size=3", "report_videos=0", "caption.method=greedy",
            f"engine={engine}", "ray.decode_actors=1", "ray.encode_actors=1"]))
        results[engine]["predictions"] = out.with_name("metrics_predictions.csv").read_text()
    local, ray = results.pop("local"), results.pop("ray")
    assert [Path(p).name for p, _ in ray["protocol"]["failed_videos"]] == [f"video{CLIPS}.mp4"]
    assert ray.pop("predictions") == local.pop("predictions")  # every video's caption identical
    assert ray.pop("protocol") == local.pop("protocol")
    assert ray == pytest.approx(local, abs=1e-9)  # BLEU, ROUGE-L, CIDEr-D
    assert local["cider"] > 0  # the default model's captions share words with the references


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A Kinetics-format validation set of 8 coloured-shape clips, and the colour class list."""
    folder = tmp_path_factory.mktemp("kinetics")
    _, val_csv = write_kinetics_format(folder, 1, 8, task="colour", size=48, num_frames=4, seed=4)
    classes = folder / "colours.txt"
    classes.write_text("\n".join(COLOURS) + "\n")
    return folder, val_csv, classes


def test_zeroshot_accuracy_is_equal_through_either_engine(cluster, kinetics, tmp_path):
    folder, val_csv, classes = kinetics
    results = {}
    for engine in ("local", "ray"):
        results[engine] = zeroshot.run(load_config(zeroshot.ZeroShotConfig, None, [
            f"annotations={val_csv}", f"video_root={folder}", f"classes={classes}",
            f"out={tmp_path / engine / 'metrics.json'}", "decode.num_frames=4", "decode.workers=0",
            "decode.batch_size=3", f"engine={engine}", "ray.decode_actors=1", "ray.encode_actors=1"]))
    local, ray = results["local"], results["ray"]
    assert ray == local  # top-1, top-5, mean class accuracy and the protocol (failures included)
    assert local["protocol"]["videos_evaluated"] == 8 and local["top1"] > 100 / len(COLOURS)


@pytest.mark.parametrize("nodes, on_gpu, keys, expected", [
    # 2 cores: the encoder reserves one CPU and runs a thread on each core; one decoder takes the other (a second
    # one would take the encoder's cores: bench_ray.py)
    ([{"CPU": 2.0}], False, {}, (1, 1.0, 1, 1.0, 0.0, None)),
    # two 16-core nodes: a quarter of each decodes (4 x 1 CPU a node), one encoder a node on the other 12 CPUs
    ([{"CPU": 16.0}, {"CPU": 16.0}], False, {}, (8, 1.0, 2, 12.0, 0.0, None)),
    # two GPUs for a model on cuda: an encoder per GPU (1 CPU each), the other 14 CPUs decode
    ([{"CPU": 16.0, "GPU": 2.0}], True, {}, (14, 1.0, 2, 1.0, 1.0, 1)),
    ([{"CPU": 16.0, "GPU": 2.0}], False, {}, (4, 1.0, 1, 12.0, 0.0, None)),  # a model on the CPU leaves GPUs idle
    # keys set stay; the encoders share what the decoders leave (4 - 1 = 3 -> 1.5 each, one thread each)
    ([{"CPU": 4.0}], False, {"decode_actors": 1, "encode_actors": 2}, (1, 1.0, 2, 1.5, 0.0, 1)),
    ([{"CPU": 1.0}], False, {}, (1, 0.5, 1, 0.5, 0.0, None)),  # one core: half of it reserved for decoding
    # one encoder on two 3-CPU nodes (and a head without CPUs) reserves one node's CPUs, not the 5.5 left over all
    ([{"CPU": 0.0}, {"CPU": 3.0}, {"CPU": 3.0}], False, {"decode_actors": 1, "encode_actors": 1},
     (1, 1.0, 1, 3.0, 0.0, 3)),
])
def test_pools_left_null_are_sized_from_the_cluster(nodes, on_gpu, keys, expected):
    from coca_video.config import RayConfig

    pools = ray_engine.sized(RayConfig(**keys), nodes, on_gpu)
    assert tuple(pools) == expected
    cpus = sum(node["CPU"] for node in nodes)
    assert pools.decode_actors * pools.cpus_per_decoder + pools.encode_actors * pools.cpus_per_encoder <= cpus
    assert pools.cpus_per_encoder <= max(node["CPU"] for node in nodes)  # an encoder fits on a node
