"""Text searches of many concurrent requests done together: the queries waiting when the model is free are encoded
in one call and ranked against the rows in one matrix product (or one index scan). On 2 busy cores one query
against 100,000 128-d rows took 20 ms (matrix-vector, memory-bound) and 20 at once 70 ms in all; with 20 clients
(benchmarks/bench_serve.py, 100,000 rows) batching took the server from 19.6 to 51.7 requests/s, p95 1.69 to 0.64 s."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import numpy as np

from .encoder import QueryEncoder
from .library import Snapshot

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Calls from many threads served by one worker thread in batches: ``batcher(item)`` waits for
    ``function(items)[i]``, where ``items`` are the calls waiting when the worker got to them (at most
    ``max_batch``). An exception of ``function`` is raised in every call of its batch."""

    def __init__(self, function: Callable[[list[T]], list[R]], max_batch: int = 32) -> None:
        self.function, self.max_batch = function, max_batch
        self.waiting: queue.Queue[tuple[T, Future] | None] = queue.Queue()
        self.worker = threading.Thread(target=self._serve, name="coca-video-batcher", daemon=True)
        self.worker.start()

    def __call__(self, item: T) -> R:
        future: Future = Future()
        self.waiting.put((item, future))
        return future.result()

    def _serve(self) -> None:
        while (first := self.waiting.get()) is not None:
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self.waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.waiting.put(None)  # close() after this batch
                    break
                batch.append(more)
            try:
                results = self.function([item for item, _ in batch])
            except Exception as err:  # noqa: BLE001 -- handed to the waiting callers
                for _, future in batch:
                    future.set_exception(err)
                continue
            for (_, future), value in zip(batch, results):
                future.set_result(value)

    def close(self) -> None:
        """Finish the calls waiting, then end the worker thread."""
        self.waiting.put(None)
        self.worker.join(timeout=10)


@dataclass(frozen=True)
class TextSearch:
    """One request's text search: its query, how many best rows it needs, among which rows (None: all)."""

    snapshot: Snapshot
    text: str
    count: int
    rows: np.ndarray | None = None


class TextSearches:
    """Text searches from any thread, batched: ``searches(TextSearch(...))`` -> (row numbers, scores), best first."""

    def __init__(self, encoder: QueryEncoder, max_batch: int = 32) -> None:
        self.encoder = encoder
        self.batcher: Batcher[TextSearch, tuple[np.ndarray, np.ndarray]] = Batcher(self.run_batch, max_batch)

    def __call__(self, search: TextSearch) -> tuple[np.ndarray, np.ndarray]:
        return self.batcher(search)

    def run_batch(self, searches: list[TextSearch]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Encode every query at once; rank the unfiltered ones of each snapshot together, the filtered one by one."""
        queries = np.stack(self.encoder.texts([s.text for s in searches]))  # (B, D)
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(searches)
        together: dict[int, list[int]] = {}
        for i, search in enumerate(searches):
            if search.rows is None:
                together.setdefault(id(search.snapshot), []).append(i)
            else:
                results[i] = search.snapshot.rank(queries[i], search.count, search.rows)
        for members in together.values():
            snapshot, count = searches[members[0]].snapshot, max(searches[i].count for i in members)
            for i, (best, scores) in zip(members, snapshot.rank_many(queries[members], count)):
                results[i] = best[:searches[i].count], scores[:searches[i].count]
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.batcher.close()
