"""`score --engine ray` against the local engine: same clips, same model, one run, measured back to back, each
engine at its defaults (the Ray engine's pools sized from the cluster it finds; a ``--decode-actors``... flag sets
that key instead).

    python benchmarks/bench_ray.py [--videos 160] [--model default] [--frames 16] [--rounds 2] 2>/dev/null
    python benchmarks/bench_ray.py --device cuda --precision bf16   # with a CUDA GPU: an encode actor per GPU

It prints:

- videos/s of the Ray engine and of the local one on the same folder (Kinetics-like clips: 320 px, 5 s at 25 fps,
  where decoding costs about as much as the default model's encoding), taking turns for ``--rounds`` rounds; each
  round's ratio compares the two measured back to back (a shared machine drifts by 5-10% from minute to minute).
  Both rates leave out start-up alike: the Ray cluster is started once before the rounds, and each engine's rate is
  (N - 1) / (T_N - T_1), from the wall time T_N of a run over the N videos and T_1 of a run over one of them just
  before it (model loading, actor or worker start-up and the first video's latency are in both, so they cancel); the
  totals T_N are printed too;
- start-up: the local cluster up (``ray.init``) and the first actor ready (a one-video run on the fresh cluster);
- the peak memory of all processes (proportional set size, so pages shared between the driver, Ray's daemons and its
  workers count once), sampled every 0.2 s, for each engine (the local engine's without the idle Ray cluster);
- the decoders-per-encoder sweep: Ray's videos/s with 1, 2, 3 ... decode actors for one encode actor;
- per-stage rates from the last Ray round's ``stage_seconds`` (busy seconds per stage summed over its actors):
  videos/s per decoding CPU and per encode actor, from which the README projects N nodes x G GPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_score import make_folder  # noqa: E402 -- the same Kinetics-like clips as the local engine's benchmark

from coca_video.config import DecodeConfig, ModelConfig, RayConfig  # noqa: E402
from coca_video.tasks.score import ScoreConfig, run  # noqa: E402


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, read from /proc (Ray's daemons and workers are the driver's)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def is_ray_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read()
        return b"/ray/" in command or command.startswith(b"ray::")
    except OSError:
        return False


class PeakMemory:
    """The peak, over a ``with`` block, of the summed PSS of this process and all its descendants (without the
    processes of a Ray cluster this process started, unless ``with_ray``)."""

    def __init__(self, with_ray: bool) -> None:
        self.with_ray = with_ray

    def __enter__(self) -> "PeakMemory":
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            pids = descendants(os.getpid())
            if not self.with_ray:
                ray_trees = [descendants(pid) for pid in pids if is_ray_process(pid)]
                pids = set(pids).difference(*ray_trees)
            self.peak = max(self.peak, sum(pss_mb(pid) for pid in pids))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ray_config(args: argparse.Namespace, decode_actors: int | None = None) -> RayConfig:
    """The Ray engine's keys: those given on the command line, the others null (sized from the cluster)."""
    return RayConfig(decode_actors=decode_actors or args.decode_actors, cpus_per_decoder=args.cpus_per_decoder,
                     encode_actors=args.encode_actors, cpus_per_encoder=args.cpus_per_encoder,
                     gpus_per_encoder=args.gpus_per_encoder)


def score(folder: Path, out: Path, args: argparse.Namespace, engine: str, decode_actors: int | None = None) -> dict:
    cluster = ray_config(args, decode_actors)
    model = ModelConfig(args.model, device=args.device, precision=args.precision)
    cfg = ScoreConfig(videos=str(folder), out=str(out), engine=engine, model=model,
                      decode=DecodeConfig(args.frames, batch_size=args.batch_size, workers=args.workers), ray=cluster)
    start = time.perf_counter()
    with PeakMemory(with_ray=engine == "ray") as memory:
        summary = run(cfg)
    summary["wall_seconds"] = time.perf_counter() - start
    assert summary["scored_now"] == summary["videos"] == summary["ok_total"], f"{engine}: not every video scored ok"
    summary["peak_mb"] = memory.peak
    return summary


def describe(pools: dict) -> str:
    """The sized pools in words."""
    threads = pools["threads"] or "its node's cores as"
    return (f"{pools['decode_actors']} decode actor(s) x {pools['cpus_per_decoder']:g} CPU, {pools['encode_actors']} "
            f"encode actor(s) x {pools['cpus_per_encoder']:g} CPU ({threads} threads), "
            f"{pools['gpus_per_encoder']:g} GPU each")


def steady_rate(videos: int, seconds: float, one_video_seconds: float) -> float:
    """Videos/s without start-up: the videos after the first over the time they added to a one-video run."""
    return (videos - 1) / (seconds - one_video_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=160)
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="the local engine's decoding workers")
    parser.add_argument("--decode-actors", type=int, default=None, help="ray.decode_actors (default: sized)")
    parser.add_argument("--cpus-per-decoder", type=float, default=None, help="ray.cpus_per_decoder (default: sized)")
    parser.add_argument("--encode-actors", type=int, default=None, help="ray.encode_actors (default: sized)")
    parser.add_argument("--cpus-per-encoder", type=float, default=None, help="ray.cpus_per_encoder (default: sized)")
    parser.add_argument("--gpus-per-encoder", type=float, default=None, help="ray.gpus_per_encoder (default: sized)")
    parser.add_argument("--device", default="cpu", help="model.device, the same for both engines")
    parser.add_argument("--precision", default="fp32", help="model.precision, the same for both engines")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sweep", default="1,2,3", help="decode actors per encode actor to try (empty: none)")
    args = parser.parse_args()

    import ray

    from coca_video.engines.ray_engine import PACKAGE_ROOT, environment, local_cpus

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        make_folder(folder, args.videos, 320, num_frames=125)
        probe = Path(tmp) / "one"
        probe.mkdir()
        make_folder(probe, 1, 320, num_frames=125)
        sweep = [int(d) for d in args.sweep.split(",") if d]
        cpus = max(local_cpus(ray_config(args, decoders)) for decoders in [None, *sweep])  # as a run's own cluster
        start = time.perf_counter()
        with environment({"PYTHONPATH": PACKAGE_ROOT}):  # inherited by the workers, as the engine's own cluster does
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
        cluster_up = time.perf_counter() - start
        runs = iter(range(1_000_000))

        def timed(videos: Path, engine: str, decode_actors: int | None = None) -> dict:
            return score(videos, Path(tmp) / f"{engine}{next(runs)}.parquet", args, engine, decode_actors)

        first = {engine: timed(probe, engine) for engine in ("ray", "local")}  # ray's first: start-up
        one, pools = {engine: run["wall_seconds"] for engine, run in first.items()}, first["ray"]["ray_pools"]
        print(f"{args.videos} Kinetics-like videos (320 px, 125 frames), {args.frames} frames each, model "
              f"{args.model}, {os.cpu_count()} cores; local: {args.workers} decoding workers; ray: {cpus} logical "
              f"CPUs, pools {describe(pools)}")
        print(f"start-up: cluster up {cluster_up:.1f} s; a one-video run on it (actors start, model loads, one "
              f"video): ray {one['ray']:.1f} s, local engine {one['local']:.1f} s")
        rates: dict[str, list[float]] = {"local": [], "ray": []}
        totals: dict[str, list[float]] = {"local": [], "ray": []}
        memory: dict[str, float] = {"local": 0.0, "ray": 0.0}
        stages: dict[str, float] = {}
        for _ in range(args.rounds):
            for engine in ("local", "ray"):
                one[engine] = timed(probe, engine)["wall_seconds"]
                summary = timed(folder, engine)
                totals[engine].append(summary["wall_seconds"])
                rates[engine].append(steady_rate(args.videos, summary["wall_seconds"], one[engine]))
                memory[engine] = max(memory[engine], summary["peak_mb"])
                if engine == "ray":
                    stages = summary.get("stage_seconds", {})
        ratios = [r / l for r, l in zip(rates["ray"], rates["local"])]
        for engine in ("local", "ray"):
            shown_rates, shown_totals = (" ".join(f"{v:.{d}f}" for v in values)
                                         for values, d in ((rates[engine], 2), (totals[engine], 1)))
            print(f"{engine:<5} engine {statistics.median(rates[engine]):6.2f} videos/s start-up excluded (rounds: "
                  f"{shown_rates}; totals {shown_totals} s)")
        print(f"ray / local, per round: {' '.join(f'{r:.2f}' for r in ratios)}; median "
              f"{statistics.median(ratios):.2f}x (goal >= 0.8x)")
        print(f"peak memory, all processes (PSS): local engine {memory['local']:.0f} MB (driver + decoding workers), "
              f"ray {memory['ray']:.0f} MB (driver, GCS, raylet, workers, actors)")
        if stages:  # the last Ray round's busy seconds per stage, summed over its actors
            decode_rate = args.videos / stages["decode"]  # videos/s of one decode actor while busy
            encode_rate = args.videos / stages["encode"]  # videos/s of one encode actor while busy
            print(f"stages (busy seconds over all actors): decode {stages['decode']:.1f} s, encode "
                  f"{stages['encode']:.1f} s: {decode_rate:.2f} videos/s per decode actor, {encode_rate:.2f} videos/s "
                  f"per encode actor ({pools['cpus_per_encoder']:g} CPU, {pools['gpus_per_encoder']:g} GPU)")
        for decoders in sweep:
            one_video = timed(probe, "ray", decode_actors=decoders)["wall_seconds"]
            summary = timed(folder, "ray", decode_actors=decoders)
            print(f"sweep: {decoders} decode actor(s) per encode actor: "
                  f"{steady_rate(args.videos, summary['wall_seconds'], one_video):6.2f} videos/s")
        ray.shutdown()


if __name__ == "__main__":
    main()
