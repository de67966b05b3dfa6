"""SemDeDup (`coca-video dedup`) at scale: k-means through scikit-learn and through faiss (when it imports), time and
peak memory of each, and the recall of the planted duplicates against an exact all-pairs search at the same
threshold and with the same ranking (SemDeDup compares a subset of those pairs, so what it removes is a subset of
what the exact search removes; recall = the share of the exact removals it finds).

    python benchmarks/bench_dedup.py                         # 100,000 rows, exact search too
    python benchmarks/bench_dedup.py --rows 100000 1000000 --exact-max 100000

The rows: 512-d unit vectors in topics (a topic centre plus noise: rows of one topic have cosine ~0.4, as clips of
one subject), 10% of them planted copies of other rows: half exact, half with noise (cosine ~0.995). Both backends
train k-means on at most 256 rows per cluster (semdedup.MAX_POINTS_PER_CENTROID), then assign every row. Each backend
runs in a fresh process (spawn); "peak" is its peak resident set (VmHWM, reset once the vectors are loaded) minus
what it held then, i.e. the memory deduplication adds on top of holding the embeddings.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 512
EPS = 0.05


def planted_rows(rows: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """``rows`` (N, DIM) float32 unit vectors, 10% of them copies of others; and how many copies."""
    from coca_video.search.semdedup import normalise

    rng = np.random.default_rng(seed)
    copies = rows // 10
    distinct = rows - copies
    topics = normalise(rng.standard_normal((max(1, distinct // 100), DIM), dtype=np.float32))
    base = np.empty((distinct, DIM), dtype=np.float32)
    for start in range(0, distinct, 100_000):
        stop = min(start + 100_000, distinct)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) * (1.2 / np.sqrt(DIM))
        base[start:stop] = normalise(topics[rng.integers(0, len(topics), stop - start)] + noise)
    sources = rng.choice(distinct, copies, replace=False)
    near = rng.standard_normal((copies, DIM), dtype=np.float32) * (0.1 / np.sqrt(DIM))
    near[: copies // 2] = 0  # exact copies
    return np.concatenate([base, normalise(base[sources] + near)]), copies


def memory_mb(key: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, MB (Linux's /proc/self/status)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{key}:")[1].split()[0]) / 1024


def reset_peak() -> float:
    """Reset this process's peak resident set to what it holds now (Linux: clear_refs 5); returns that, MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return memory_mb("VmRSS")


def run_backend(vectors_path: str, backend: str, clusters: int, iterations: int, result_path: str,
                threads: int | None) -> dict:
    """One SemDeDup run in this (fresh) process: k-means, then the in-cluster pairs; times, peak memory, keep mask
    and the ranking (saved to ``result_path``). ``threads``: BLAS and OpenMP threads (None: their default)."""
    from threadpoolctl import threadpool_limits

    from coca_video.search.semdedup import dedup_clusters, kmeans, normalise, rank_in_clusters

    __import__("faiss" if backend == "faiss" else "sklearn.cluster")  # loaded before the thread limit applies
    vectors = np.load(vectors_path)
    loaded = reset_peak()
    with threadpool_limits(threads):
        started = time.perf_counter()
        unit = normalise(vectors)
        labels = kmeans(unit, clusters, backend, iterations)
        clustered = time.perf_counter()
        result = dedup_clusters(unit, labels, EPS)
        done = time.perf_counter()
    order = np.concatenate(rank_in_clusters(unit, labels))
    np.savez(result_path, keep=result.keep, order=order)
    sizes = np.bincount(labels)
    return {"kmeans_s": clustered - started, "pairs_s": done - clustered, "total_s": done - started,
            "peak_mb": memory_mb("VmHWM") - loaded, "removed": int((~result.keep).sum()),
            "largest_cluster": int(sizes.max())}


def exact_pairs(vectors: np.ndarray, block: int = 1024) -> np.ndarray:
    """(P, 2) every pair i < j with cosine > 1 - EPS, all pairs compared (upper triangle, a block of rows at a
    time)."""
    found = []
    for start in range(0, len(vectors), block):
        sims = vectors[start:start + block] @ vectors[start:].T  # (b, N - start)
        lines, columns = np.nonzero(sims > 1 - EPS)
        rows, others = lines + start, columns + start
        found.append(np.stack([rows, others], axis=1)[others > rows])
    return np.concatenate(found)


def exact_removed(pairs: np.ndarray, order: np.ndarray, rows: int) -> np.ndarray:
    """(N,) bool: what the exact search removes with ranking ``order``: the later-ranked row of every pair."""
    position = np.empty(rows, dtype=np.int64)
    position[order] = np.arange(rows)
    later = np.where(position[pairs[:, 0]] > position[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
    removed = np.zeros(rows, dtype=bool)
    removed[later] = True
    return removed


def bench(rows: int, backends: list[str], iterations: int, exact_max: int, folder: Path,
          threads: int | None) -> list[dict]:
    vectors, copies = planted_rows(rows)
    path = folder / f"vectors{rows}.npy"
    np.save(path, vectors)
    clusters = int(np.ceil(np.sqrt(rows)))
    pairs = None
    if rows <= exact_max:
        started = time.perf_counter()
        pairs = exact_pairs(vectors)
        print(f"  exact all-pairs search of {rows:,} rows: {time.perf_counter() - started:.1f} s, {len(pairs):,} "
              f"pairs above {1 - EPS}", flush=True)
    del vectors
    spawn = multiprocessing.get_context("spawn")
    results = []
    for backend in backends:
        saved = folder / f"result_{backend}_{rows}.npz"
        with spawn.Pool(1) as pool:
            record = pool.apply(run_backend, (str(path), backend, clusters, iterations, str(saved), threads))
        record |= {"rows": rows, "backend": backend, "clusters": clusters, "planted": copies}
        if pairs is not None:
            found = np.load(saved)
            exact = exact_removed(pairs, found["order"], rows)
            removed = ~found["keep"]
            record |= {"exact_removed": int(exact.sum()), "recall": float((removed & exact).sum() / exact.sum()),
                       "beyond_exact": int((removed & ~exact).sum())}
        results.append(record)
        print(f"  {backend}: {record['total_s']:.1f} s", flush=True)
    path.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--backends", nargs="+", default=None, help="default: sklearn, and faiss when it imports")
    parser.add_argument("--iterations", type=int, default=20, help="k-means iterations (the command's default: 50)")
    parser.add_argument("--exact-max", type=int, default=100_000, help="exact search up to this many rows")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads of the dedup runs (default: "
                        "theirs; on 2 cores busy with other work, 1 ran scikit-learn's k-means 5x faster than 2)")
    args = parser.parse_args()
    from coca_video.search.semdedup import has_faiss

    backends = args.backends or ["sklearn", *(["faiss"] if has_faiss() else [])]
    if "faiss" not in backends:
        print("faiss is not installed (pip install 'coca-video[faiss]'): sklearn only")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for rows in args.rows:
            print(f"{rows:,} rows, {DIM}-d, eps {EPS}, {args.iterations} k-means iterations, threads "
                  f"{args.threads or 'default'}", flush=True)
            results += bench(rows, backends, args.iterations, args.exact_max, Path(folder), args.threads)
    print(f"\n{'rows':>10} {'backend':>8} {'clusters':>8} {'k-means s':>10} {'pairs s':>8} {'total s':>8} "
          f"{'peak MB':>8} {'removed':>8} {'planted':>8} {'exact':>8} {'recall':>7} {'extra':>6}")
    for r in results:
        exact = (f"{r['exact_removed']:>8} {r['recall']:>7.4f} {r['beyond_exact']:>6}" if "recall" in r else
                 f"{'-':>8} {'-':>7} {'-':>6}")
        print(f"{r['rows']:>10,} {r['backend']:>8} {r['clusters']:>8} {r['kmeans_s']:>10.1f} {r['pairs_s']:>8.1f} "
              f"{r['total_s']:>8.1f} {r['peak_mb']:>8.0f} {r['removed']:>8} {r['planted']:>8} {exact}")


if __name__ == "__main__":
    main()
