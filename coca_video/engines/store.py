"""What the one encoding pass needs of the store it writes into: a task's result rows
(:class:`~coca_video.data.results.PartStore`) or a probe's feature cache
(:class:`~coca_video.data.feature_cache.CacheStore`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol

from ..scoring import ScoreItem

Stored = Callable[[list[ScoreItem]], None]  # told, in the process that runs the pass, of items whose rows are durable


class RowStore(Protocol):
    """A store of the pass's rows (one per item: key columns, ``status``, ``error``, then the scorer's columns),
    written by one rank; a Ray encode actor opens its own writer under a rank of its own (:meth:`opener`)."""

    def locked(self) -> AbstractContextManager[Any]:
        """This (store, rank)'s lock for a run: a second writer is refused at once."""

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse, in one line, a run whose ``settings`` are not those this store's rows are made with."""

    def done_keys(self) -> set[tuple]:
        """Keys (:meth:`~coca_video.scoring.ScoreItem.stored`) of the items a run need not encode again."""

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Keep ``rows`` (ok and error rows), each durable once this returns."""

    def ranks(self) -> set[int]:
        """The ranks that have written rows here."""

    def rows_since(self, earlier_ranks: frozenset[int]) -> list[dict[str, Any]]:
        """The key columns, ``segment_start`` and ``status`` of the rows written by ranks not in ``earlier_ranks``."""

    def opener(self) -> Callable[[int], RowStore]:
        """A picklable ``open(rank)``: this store's writer under another rank (what each Ray encode actor calls)."""
