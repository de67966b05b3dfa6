"""What one request to ``coca-video serve`` may ask for: the ``limits.*`` keys of the serve config, read by the
routes (anything beyond a limit is a 4xx with a message). Apart from the routes so that the config imports without
FastAPI."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check_at_least


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything beyond is a 4xx with a message."""

    max_query_chars: int = 500  # longest text query (and filter) accepted
    max_k: int = 100  # most results per request
    max_offset: int = 10_000  # deepest page start
    max_upload_bytes: int = 10_000_000  # largest image upload

    def __post_init__(self) -> None:
        for key in ("max_query_chars", "max_k", "max_upload_bytes"):
            check_at_least(key, getattr(self, key), 1)
        check_at_least("max_offset", self.max_offset, 0)
