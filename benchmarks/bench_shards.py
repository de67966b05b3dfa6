"""The same videos scored as WebDataset shards and as plain files, side by side in one run.

    PYTHONPATH=. python benchmarks/bench_shards.py --clips 24 --shards 2

Writes ``--clips`` synthetic clips as files and as ``--shards`` tars in video2dataset's layout (key.mp4, key.json,
key.txt), then, in turns (``--rounds``), scores each with ``coca-video score``'s task (the built-in default model,
``decode.workers`` decoding workers) into a fresh output, and decodes each (``open_video`` + 8 frames, this
process, no scoring). Prints videos/s per input kind (median over the rounds) and the shards/files ratio: what
reading a member in place (its headers scanned once per process, the member copied to a temporary file for the
decoder) costs against opening the file.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np


def make_inputs(root: Path, clips: int, shards: int, seconds: float) -> tuple[Path, list[Path], Path]:
    """``clips`` clips in ``root/files``, the same bytes in ``shards`` tars in ``root/shards``; a label list."""
    from coca_video.data.synthetic import COLOURS, SyntheticVideos
    from coca_video.video import write_video

    files, tars = root / "files", root / "shards"
    files.mkdir()
    tars.mkdir()
    fps = 8
    made = SyntheticVideos(clips, size=128, num_frames=int(seconds * fps), seed=0, split="test", p_reference=0.0)
    for i in range(clips):
        write_video(files / f"clip{i:04d}.mp4", made[i][0], fps=fps)
    paths = []
    for shard in range(shards):
        path = tars / f"{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(shard, clips, shards):
                key = f"{shard:05d}{i:04d}"
                meta = {"url": f"https://example.com/{i}.mp4", "caption": f"clip {i}", "key": key, "status": "success",
                        "error_message": None}
                for suffix, data in (("mp4", (files / f"clip{i:04d}.mp4").read_bytes()),
                                     ("json", json.dumps(meta).encode()), ("txt", f"clip {i}".encode())):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size, info.mtime = len(data), time.time()
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    labels = root / "colours.txt"
    labels.write_text("\n".join(COLOURS) + "\n")
    return files, paths, labels


def score_seconds(videos: str, out: Path, labels: Path, workers: int) -> tuple[float, int]:
    """Seconds of one ``score`` run from nothing stored, and the rows it scored."""
    from coca_video.config import load_config
    from coca_video.tasks import score

    cfg = load_config(score.ScoreConfig, None, [f"videos={videos}", f"out={out}", f"labels={labels}",
                                                "decode.num_frames=8", f"decode.workers={workers}", "top_k=3"])
    started = time.perf_counter()
    summary = score.run(cfg)
    return time.perf_counter() - started, summary["scored_now"]


def decode_seconds(paths: list[str]) -> float:
    """Seconds to open each video of ``paths`` and decode 8 evenly spaced frames, in this process."""
    from coca_video.video.source import open_video

    started = time.perf_counter()
    for path in paths:
        with open_video(path, short_side=64) as reader:
            reader.get_frames(np.linspace(0, reader.num_frames - 1, 8).round().astype(int))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    parser.add_argument("--workers", type=int, default=2, help="decode.workers of the score runs")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from coca_video.data.shards import read_shard

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files, tars, labels = make_inputs(root, args.clips, args.shards, args.seconds)
        members = [sample.path for tar in tars for sample in read_shard(str(tar)).samples]
        plain = sorted(str(p) for p in files.glob("*.mp4"))
        pattern = f"{tars[0].parent}/{{00000..{args.shards - 1:05d}}}.tar"
        scored: dict[str, list[float]] = {"files": [], "shards": []}
        decoded: dict[str, list[float]] = {"files": [], "shards": []}
        for turn in range(args.rounds):
            for kind, videos in (("files", str(files)), ("shards", pattern)):
                seconds, rows = score_seconds(videos, root / f"{kind}-{turn}.parquet", labels, args.workers)
                assert rows == args.clips, (kind, rows)
                scored[kind].append(args.clips / seconds)
            decoded["files"].append(args.clips / decode_seconds(plain))
            decoded["shards"].append(args.clips / decode_seconds(members))
    print(f"{args.clips} clips of {args.seconds:.0f} s (128 px, 8 fps), {args.shards} shards, {args.rounds} rounds, "
          f"median videos/s")
    for name, table in (("score", scored), ("decode only", decoded)):
        files_rate, shards_rate = statistics.median(table["files"]), statistics.median(table["shards"])
        print(f"{name:12s} files {files_rate:7.2f}  shards {shards_rate:7.2f}  "
              f"shards/files {shards_rate / files_rate:.2f}")


if __name__ == "__main__":
    main()
