"""Bad invocations of every command: exit code 2, exactly one line on stderr naming the culprit, no traceback.

Each case builds its inputs in ``tmp_path`` and returns the argv and the text the error line must contain. They run
in-process through ``coca_video.cli.main`` (fast); a few also run as a real process to prove nothing else reaches
stderr.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import REPO, clips_and_labels

from coca_video.cli import main
from coca_video.model import VideoClassifier, VideoClassifierConfig, save_probe

FAST = ["decode.workers=0", "decode.num_frames=2", "decode.batch_size=2"]
RAY_POOLS = ["ray.decode_actors=2", "ray.cpus_per_decoder=1", "ray.encode_actors=1", "ray.cpus_per_encoder=1"]


@dataclass
class World:
    """Tiny inputs shared by the cases: two clips, a class list, and a scratch folder per case."""

    videos: Path
    labels: Path
    tmp: Path

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def score(self, *args: str) -> list[str]:
        """A score invocation over the two clips with zero-shot labels, writing into the scratch folder."""
        return ["score", str(self.videos), "--labels", str(self.labels), "--out", str(self.tmp / "s.parquet"),
                *args, *FAST]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    return clips_and_labels(tmp_path_factory.mktemp("clips"), 2, size=64, num_frames=4, seed=1, fps=4)


@pytest.fixture
def world(clips, tmp_path) -> World:
    return World(clips[0], clips[1], tmp_path)


def probe_folder(w: World, meta: str | None = None, truncate: bool = False) -> Path:
    """A probe folder: a real one (optionally with its weights truncated), or one whose probe.json is ``meta``."""
    folder = w.tmp / "probe"
    classifier = VideoClassifier(VideoClassifierConfig(width=32, num_classes=3, heads=2, num_frames=2))
    save_probe(folder, classifier, ["a", "b", "c"], "default", None)
    if meta is not None:
        (folder / "probe.json").write_text(meta)
    if truncate:
        weights = folder / "classifier.safetensors"
        weights.write_bytes(weights.read_bytes()[:40])
    return folder


def null_embeddings(w: World) -> Path:
    path = w.tmp / "s.embeddings.parquet"
    pq.write_table(pa.table({"path": ["a.mp4", "b.mp4"],
                             "video_embedding": pa.array([None, None], pa.list_(pa.float32()))}), path)
    return path


def foreign_out(w: World) -> tuple[list[str], str]:
    """A score run whose --out already exists as a file of someone else's (no .parts folder beside it)."""
    w.file("s.parquet", "mine")
    return w.score(), "s.parquet: file exists and was not written by coca-video"


def model_folder_with_list_config(w: World) -> Path:
    folder = w.tmp / "model"
    folder.mkdir()
    (folder / "config.json").write_text("[1, 2, 3]")
    return folder


Case = Callable[[World], tuple[list[str], str]]
CASES: dict[str, Case] = {
    "model-missing": lambda w: (w.score("--model", "/nonexistent"), "/nonexistent"),
    "model-is-a-file": lambda w: (w.score("--model", str(w.file("weights.bin", "x"))), "weights.bin"),
    "model-config-is-a-list": lambda w: (w.score("--model", str(model_folder_with_list_config(w))), "config.json"),
    "num-frames-0": lambda w: ([*w.score(), "decode.num_frames=0"], "decode.num_frames must be >= 1, got 0"),
    "num-frames-negative": lambda w: ([*w.score(), "decode.num_frames=-3"], "decode.num_frames must be >= 1, got -3"),
    "timeout-0": lambda w: ([*w.score(), "decode.timeout=0"], "decode.timeout"),
    "top-k-0": lambda w: (w.score("--top-k", "0"), "top_k must be >= 1, got 0"),
    "top-k-negative": lambda w: ([*w.score(), "top_k=-1"], "top_k must be >= 1, got -1"),
    "batch-size-0": lambda w: ([*w.score(), "decode.batch_size=0"], "decode.batch_size must be >= 1"),
    "workers-negative": lambda w: ([*w.score(), "decode.workers=-1"], "decode.workers must be >= 0"),
    "device-banana": lambda w: (w.score("--device", "banana"), "model.device must be one of cpu, cuda"),
    "device-cuda-absent": lambda w: (w.score("--device", "cuda"), "model.device=cuda: no CUDA device"),
    "caption-max-len-0": lambda w: ([*w.score(), "caption.max_len=0"], "caption.max_len must be >= 2, got 0"),
    "flat-caption-key": lambda w: ([*w.score(), "caption_method=greedy"],
                                   "unknown key 'caption_method' for ScoreConfig. Did you mean: caption.method?"),
    "flat-source-key": lambda w: (["retrieval", "msrvtt_data=x.json"],
                                  "unknown key 'msrvtt_data' for RetrievalConfig. Did you mean: source.msrvtt_data?"),
    "out-json": lambda w: (w.score("--out", str(w.tmp / "x.json")), "out must be a path ending in .parquet or .csv"),
    "report-not-html": lambda w: (w.score("--report", str(w.videos / "clip0.mp4")), "report must be a path ending"),
    "out-is-an-input": lambda w: (["score", str(w.videos), "--labels", str(w.file("l.csv", "name\nred\nblue\n")),
                                   "--out", str(w.tmp / "l.csv"), *FAST], "is one of the input files"),
    "out-exists-not-ours": lambda w: foreign_out(w),
    "out-folder-not-writable": lambda w: (w.score("--out", "/proc/forbidden/x.csv"), "cannot write in /proc/forbidden"),
    "pretrain-lr-negative": lambda w: (["pretrain", "--config", str(REPO / "configs/pretrain/tiny_synthetic.yaml"),
                                        "optim.lr=-1", f"output_dir={w.tmp / 'run'}"], "optim.lr must be > 0, got -1"),
    "pretrain-batch-size-0": lambda w: (["pretrain", "--config", str(REPO / "configs/pretrain/tiny_synthetic.yaml"),
                                         "train.batch_size=0", f"output_dir={w.tmp / 'run'}"],
                                        "train.batch_size must be >= 1, got 0"),
    "report-exists-not-ours": lambda w: (w.score("--report", str(w.file("r.html", "<html>mine</html>"))),
                                         "report="),
    "labels-binary": lambda w: (w.score("--labels", str(w.file("bin.txt", bytes(range(256))))), "bin.txt"),
    "labels-latin1": lambda w: (w.score("--labels", str(w.file("lat.txt", "caf\u00e9\nna\u00efve\n".encode("latin-1")))),
                                "lat.txt: class list is not UTF-8"),
    "template-positional": lambda w: ([*w.score(), f"templates={w.file('t.txt', 'a video of {0}.')}"], "t.txt"),
    "labels-missing": lambda w: (w.score("--labels", "/no/such/labels.txt"), "/no/such/labels.txt"),
    "video-folder-missing": lambda w: (["score", str(w.tmp / "nope"), "--labels", str(w.labels), *FAST], "nope"),
    "unknown-key": lambda w: ([*w.score(), "decode.num_frame=4"], "decode.num_frame"),
    "config-file-missing": lambda w: ([*w.score(), "--config", str(w.tmp / "c.yaml")], "c.yaml"),
    "probe-junk-json": lambda w: (["score", str(w.videos), "--probe", str(probe_folder(w, "{not json")), *FAST],
                                  "probe.json"),
    "probe-missing-keys": lambda w: (["score", str(w.videos), "--probe", str(probe_folder(w, '{"classes": ["a"]}')),
                                      *FAST], "probe.json"),
    "probe-truncated-weights": lambda w: (["score", str(w.videos), "--probe", str(probe_folder(w, truncate=True)),
                                           "--out", str(w.tmp / "p.parquet"), *FAST], "classifier.safetensors"),
    "search-random-bytes": lambda w: (["search", str(w.file("e.parquet", bytes(range(256)) * 4)), "red"],
                                      "e.parquet"),
    "search-k-negative": lambda w: (["search", str(null_embeddings(w)), "red", "-k", "-3"], "-k must be >= 1"),
    "search-only-failed-rows": lambda w: (["search", str(null_embeddings(w)), "red"], "s.embeddings.parquet"),
    "search-missing": lambda w: (["search", str(w.tmp / "none.parquet"), "red"], "none.parquet"),
    "search-not-embeddings": lambda w: (["search", str(w.file("t.parquet", b"")), "red"], "t.parquet"),
    "retrieval-out-csv": lambda w: (["retrieval", "--out", str(w.tmp / "m.csv")], "out must be a path ending in .json"),
    "retrieval-captions-latin1": lambda w: (["retrieval", "--videos", str(w.videos), "--captions",
                                             str(w.file("c.csv", "video,caption\na.mp4,caf\u00e9\n".encode("latin-1"))),
                                             "--out", str(w.tmp / "m.json"), *FAST], "c.csv"),
    "captioning-nothing-to-caption": lambda w: (["captioning", "--videos", str(w.videos)],
                                                "captioning needs source.captions="),
    "captioning-captions-missing": lambda w: (["captioning", "--videos", str(w.videos), "--captions",
                                               str(w.tmp / "none.csv"), "--out", str(w.tmp / "m.json")], "none.csv"),
    "captioning-no-video-found": lambda w: (["captioning", "--videos", str(w.videos), "--captions",
                                             str(w.file("c.csv", "video,caption\ngone.mp4,a red square\n")),
                                             "--out", str(w.tmp / "m.json"), *FAST], "gone.mp4"),
    "captioning-msrvtt-data-missing": lambda w: (["captioning", "--videos", str(w.videos), "--msrvtt-data",
                                                  str(w.tmp / "MSRVTT_data.json"), "--msrvtt-split", "full"],
                                                 "MSRVTT_data.json"),
    "captioning-max-len-1": lambda w: (["captioning", "caption.max_len=1"], "caption.max_len must be >= 2"),
    "score-caption-beam-size-0": lambda w: (w.score("--caption", "caption.beam_size=0"),
                                            "caption.beam_size must be >= 1, got 0"),
    "score-caption-min-len-not-below-max": lambda w: (w.score("--caption", "caption.min_len=30"),
                                                      "caption.min_len must be < max_len (30)"),
    "captioning-repetition-penalty-0": lambda w: (["captioning", "caption.repetition_penalty=0"],
                                                  "caption.repetition_penalty must be > 0"),
    "probe-epochs-0": lambda w: (["probe", "train.epochs=0"], "train.epochs must be >= 1 or null"),
    "probe-flat-epochs": lambda w: (["probe", "epochs=8"],
                                    "unknown key 'epochs' for ProbeConfig. Did you mean: train.epochs?"),
    "probe-batch-size-0": lambda w: (["probe", "train.batch_size=0"], "train.batch_size must be >= 1, got 0"),
    "probe-lr-negative": lambda w: (["probe", "optim.lr=-1"], "optim.lr must be > 0, got -1"),
    "probe-heads-0": lambda w: (["probe", "probe.heads=0"], "probe.heads must be >= 1, got 0"),
    "probe-label-smoothing-1": lambda w: (["probe", "probe.label_smoothing=1"], "probe.label_smoothing must be in"),
    "probe-temporal-views-0": lambda w: (["probe", "eval.temporal_views=0"], "eval.temporal_views must be >= 1"),
    "probe-synthetic-videos-0": lambda w: (["probe", "data.synthetic.train_videos=0"],
                                           "data.synthetic.train_videos must be >= 1, got 0"),
    "retrieval-msrvtt-no-test-videos": lambda w: (
        ["retrieval", "--videos", str(w.videos), "--out", str(w.tmp / "m.json"), "--msrvtt-data",
         str(w.file("d.json", '{"sentences": [{"video_id": "clip0", "caption": "a red square"}]}')), *FAST],
        "d.json: 1 caption of 1 video (1 of them in"),
    "probe-output-dir-is-a-file": lambda w: (["probe", f"output_dir={w.file('run', 'x')}"], "output_dir="),
    "pretrain-output-dir-is-a-file": lambda w: (["pretrain", f"output_dir={w.file('run', 'x')}"], "output_dir="),
    "convert-onto-a-file": lambda w: (["convert", "missing.pt", str(w.file("dst", "x")), "--model", "tiny"], "dst"),
    "merge-no-parts": lambda w: (["merge", str(w.tmp / "s.parquet")], "s.parquet.parts"),
    "engine-banana": lambda w: (w.score("--engine", "banana"), "engine"),
    "ray-encode-actors-0": lambda w: ([*w.score("--engine", "ray"), "ray.encode_actors=0"],
                                      "ray.encode_actors must be >= 1, got 0"),
    "ray-cpus-per-decoder-0": lambda w: ([*w.score(), "ray.cpus_per_decoder=0"], "ray.cpus_per_decoder must be > 0"),
    "ray-gpus-negative": lambda w: ([*w.score(), "ray.gpus_per_encoder=-1"], "ray.gpus_per_encoder must be >= 0"),
    "ray-address-banana": lambda w: ([*w.score(), "ray.address=banana"], "ray.address must be null"),
    "ray-num-cpus-below-the-pools": lambda w: ([*w.score(), *RAY_POOLS, "ray.num_cpus=2"], "ray.num_cpus must be >= 3, got 2"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_invocation_is_one_line_naming_the_culprit(name, world, capsys):
    argv, culprit = CASES[name](world)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"coca-video {argv[0]}: error: ") and culprit in lines[0], err
    assert "Traceback" not in err
    assert not (world.tmp / "s.parquet.parts").exists()  # nothing scored: no store left beside --out


def test_engine_ray_without_ray_installed_is_one_line_naming_the_extra(world, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as when not installed
    assert main(world.score("--engine", "ray")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'coca-video[ray]'" in lines[0], lines
    assert not (world.tmp / "s.parquet.parts").exists()  # refused before any work


def test_engine_ray_under_torchrun_is_one_line(world, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(world.score("--engine", "ray")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "without torchrun" in lines[0], lines


def test_inputs_that_were_refused_as_outputs_are_untouched(world, capsys):
    video = world.videos / "clip0.mp4"
    before = video.read_bytes()
    assert main(world.score("--out", str(video))) == 2
    assert main(world.score("--report", str(video))) == 2
    assert video.read_bytes() == before
    mine = world.file("s.parquet", "my own file")
    assert main(world.score()) == 2 and mine.read_text() == "my own file"
    assert not (world.tmp / "s.parquet.parts").exists()  # refused before any work
    capsys.readouterr()


def test_convert_onto_someone_elses_folder_leaves_it_untouched_and_no_staging(world, capsys):
    dst = world.tmp / "theirs"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me")
    assert main(["convert", "missing.pt", str(dst), "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(dst) in err
    assert [p.name for p in dst.iterdir()] == ["notes.txt"] and (dst / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in world.tmp.iterdir()) == ["theirs"]  # no staging folder beside it


def test_a_typo_in_a_flag_is_argparses_exit_2(world, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(world.videos), "--lables", str(world.labels)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--lables" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["num-frames-0", "search-random-bytes", "probe-truncated-weights"])
def test_a_real_process_prints_one_line_and_no_traceback(name, world):
    argv, culprit = CASES[name](world)
    done = subprocess.run([sys.executable, "-m", "coca_video.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and culprit in done.stderr and "Traceback" not in done.stderr
