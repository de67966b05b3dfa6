"""Load on ``coca-video serve``: concurrent clients sending text queries over loopback; p50/p95 latency and errors.

    PYTHONPATH=. python benchmarks/bench_serve.py [--rows 100000] [--clients 20] [--queries 50] [--index]

An embeddings file of ``--rows`` random unit vectors (the default model's width, 128) and made-up paths stands in
for a scored library (``--index``: with its int8 index built by ``coca-video index`` first). The real command serves
it on 127.0.0.1 at a free port in a child process (stopped with Ctrl-C's SIGINT at the end, or killed past its time
limit); ``--clients`` threads each send ``--queries`` GET /api/search requests one after another on a kept-alive
connection, every query text different, k=10. Latency is per request, from send to the last byte of the answer;
an error is any answer but 200 or a request over ``--timeout`` seconds. Everything is bounded: the server must be up
within ``--start-timeout`` seconds and the load finish within ``--timeout`` per request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star"]


def write_library(path: Path, rows: int, dim: int = 128, seed: int = 0) -> None:
    """An embeddings file of ``rows`` random unit vectors, written in blocks (bounded memory), as score's sidecar."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([("path", pa.string()), ("video_embedding", pa.list_(pa.float32()))],
                       metadata={"model": "default"})
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 100_000):
            count = min(100_000, rows - start)
            block = rng.standard_normal((count, dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            offsets = pa.array(np.arange(0, (count + 1) * dim, dim, dtype=np.int32))
            vectors = pa.ListArray.from_arrays(offsets, pa.array(block.reshape(-1)))
            paths = pa.array([f"/library/videos/{i:07d}.mp4" for i in range(start, start + count)])
            writer.write_table(pa.Table.from_arrays([paths, vectors], schema=schema))


def start_server(embeddings: Path, timeout: float) -> tuple[subprocess.Popen, int, float]:
    """``coca-video serve`` on 127.0.0.1:<free port>; returns the process, its port and the seconds it took."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "coca_video.cli", "serve", str(embeddings), "--port", "0"],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = threading.Timer(timeout, proc.kill)
    deadline.start()
    try:
        for line in proc.stderr:
            if "Ctrl-C stops" in line:
                return proc, int(line.split("127.0.0.1:")[1].split("/")[0]), time.time() - started
    finally:
        deadline.cancel()
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def client(port: int, queries: list[str], timeout: float, latencies: list[float], errors: list[str]) -> None:
    """Send ``queries`` one after another on one kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    for query in queries:
        started = time.perf_counter()
        try:
            conn.request("GET", f"/api/search?k=10&q={quote(query)}")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or len(json.loads(body)["results"]) != 10:
                errors.append(f"{response.status} {body[:80]!r}")
        except (OSError, http.client.HTTPException, ValueError) as err:
            errors.append(f"{type(err).__name__}: {err}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        latencies.append(time.perf_counter() - started)
    conn.close()


def load(port: int, clients: int, per_client: int, timeout: float) -> dict:
    """``clients`` threads x ``per_client`` distinct text queries; latency percentiles, errors, throughput."""
    texts = [f"a {size} {colour} {shape} number {n}" for n in range(clients * per_client // 48 + 1)
             for size in ("small", "big") for colour in COLOURS for shape in SHAPES][:clients * per_client]
    latencies: list[float] = []
    errors: list[str] = []
    threads = [threading.Thread(target=client, args=(port, texts[i::clients], timeout, latencies, errors))
               for i in range(clients)]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.time() - started
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": len(errors), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(float(ms.max()), 1),
            "requests_per_s": round(len(latencies) / seconds, 1), "seconds": round(seconds, 1),
            "first_errors": errors[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--queries", type=int, default=50, help="per client")
    parser.add_argument("--index", action="store_true", help="build the int8 index first (coca-video index)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds the server may take to start")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        embeddings = Path(tmp) / "bench.embeddings.parquet"
        started = time.time()
        write_library(embeddings, args.rows)
        summary = {"rows": args.rows, "index": args.index, "file_mb": round(embeddings.stat().st_size / 2**20),
                   "write_s": round(time.time() - started, 1)}
        if args.index:
            started = time.time()
            subprocess.run([sys.executable, "-m", "coca_video.cli", "index", str(embeddings)], check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
            summary["index_s"] = round(time.time() - started, 1)
        proc, port, summary["server_start_s"] = start_server(embeddings, args.start_timeout)
        try:
            summary.update(load(port, args.clients, args.queries, args.timeout))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                summary["exit_code"] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                summary["exit_code"] = "killed"
        summary["clients"], summary["queries_per_client"] = args.clients, args.queries
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
