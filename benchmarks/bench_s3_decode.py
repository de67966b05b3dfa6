"""How score should read an object from S3: download it to a temporary local file (what it does) or stream it
through fsspec's file object into PyAV. Both against moto's S3 server on 127.0.0.1, on the same clips, in turns.

    PYTHONPATH=. python benchmarks/bench_s3_decode.py --clips 12 --seconds 10

Prints the median seconds per clip to read the headers and 8 evenly spaced frames: from a local file (the floor),
from a downloaded copy (``coca_video.data.video.open_video`` on the URL: the download and both decodes run in the
time-limited helper process), and streamed (PyAV over ``fs.open(url)``, in this process, without a time limit), and
the GET requests each made. Loopback has no latency: on real S3 every request costs tens of ms, which streaming's
many ranged reads pay and one download does not.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def clip_frames(seconds: float, fps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    count = int(seconds * fps)
    base = rng.integers(0, 255, (1, 240, 320, 3), dtype=np.uint8)
    shift = np.arange(count, dtype=np.uint8)[:, None, None, None]
    return (base + shift * 3).astype(np.uint8)  # moving texture: real inter frames


def streamed(fs, url: str, frames: int) -> int:
    """Headers and ``frames`` evenly spaced frames with PyAV over an fsspec file object, seeking to the keyframe
    before each (as the reader does on a local file)."""
    import av

    with fs.open(url.removeprefix("s3://"), "rb", block_size=1 << 20) as handle, av.open(handle) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base)
        got = 0
        for target in np.linspace(0, seconds * 0.99, frames):
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time >= target - 1e-6:
                    got += 1
                    break
    return got


class Requests(logging.Handler):
    """Counts the object GETs moto's server logs (one log line per request)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "GET /bench/" in record.getMessage()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    requests = Requests()
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(requests)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import fsspec

    from coca_video.data.video import open_video
    from coca_video.video import VideoReader, write_video

    fs = fsspec.filesystem("s3", use_listings_cache=False)
    fs.mkdir("bench")
    folder = Path(tempfile.mkdtemp())
    urls, paths = [], []
    for i in range(args.clips):
        path = write_video(folder / f"clip{i:02d}.mp4", clip_frames(args.seconds, 25, i), fps=25)
        fs.put_file(str(path), f"bench/clip{i:02d}.mp4")
        urls.append(f"s3://bench/clip{i:02d}.mp4")
        paths.append(path)
    size = statistics.mean(p.stat().st_size for p in paths) / 1e6

    def local(i: int) -> None:
        reader = VideoReader(paths[i], timeout=60)
        reader.get_frames(np.linspace(0, reader.num_frames - 1, args.frames).round().astype(int))

    def downloaded(i: int) -> None:
        with open_video(urls[i], timeout=60) as reader:
            reader.get_frames(np.linspace(0, reader.num_frames - 1, args.frames).round().astype(int))

    def stream(i: int) -> None:
        assert streamed(fs, urls[i], args.frames) == args.frames

    methods = {"local file": local, "download, then decode": downloaded, "streamed via fs.open": stream}
    for method in methods.values():  # warm up: helper process, s3fs import, connections
        method(0)
    times: dict[str, list[float]] = {name: [] for name in methods}
    gets = dict.fromkeys(methods, 0)
    for i in range(args.clips):
        for name, method in methods.items():
            before, started = requests.count, time.perf_counter()
            method(i)
            times[name].append(time.perf_counter() - started)
            gets[name] += requests.count - before
    print(f"{args.clips} clips of {args.seconds:g} s 320x240 at 25 fps ({size:.2f} MB each), {args.frames} frames each")
    for name, values in times.items():
        print(f"{name:24s} median {statistics.median(values) * 1000:7.1f} ms  (min {min(values) * 1000:.1f}, "
              f"max {max(values) * 1000:.1f}), {gets[name] / args.clips:.1f} GETs a clip")
    server.stop()


if __name__ == "__main__":
    main()
