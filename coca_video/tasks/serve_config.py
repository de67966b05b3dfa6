"""``coca-video serve``'s keys (:class:`ServeConfig`), apart from the task (:mod:`coca_video.tasks.serve`), so that
reading them (``--help``, a config error) imports neither torch nor FastAPI."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ModelConfig, check, check_suffix
from ..serve.limits import Limits


@dataclass
class ServeConfig:
    embeddings: str = ""  # <out>.embeddings.parquet written by score
    scores: str | None = None  # score's --out table (.parquet or .csv): each result's top-1 label and caption
    dedup: str | None = None  # a coca-video dedup file of these embeddings: the rows it removed are never shown
    host: str = "127.0.0.1"  # address to bind; anything but a loopback address prints a warning (set a token)
    port: int = 8000  # TCP port (0: any free one, printed)
    token: str | None = None  # every request needs Authorization: Bearer TOKEN (default: $COCA_VIDEO_TOKEN, else none)
    limits: Limits = field(default_factory=Limits)  # what one request may ask for (limits.max_k, ...)
    reload_seconds: float = 1.0  # how often the files are checked for a rewrite (then reloaded whole)
    model: ModelConfig = field(default_factory=ModelConfig)  # default: the model named in the embeddings file

    def __post_init__(self) -> None:
        if self.embeddings:  # unset only in the defaults (help text); run() names a missing file
            check_suffix("embeddings", self.embeddings, (".parquet",))
        check_suffix("scores", self.scores, (".parquet", ".csv"), optional=True)
        check_suffix("dedup", self.dedup, (".parquet",), optional=True)
        check(isinstance(self.port, int) and 0 <= self.port <= 65535, "port", "be 0-65535", self.port)
        check(isinstance(self.reload_seconds, (int, float)) and self.reload_seconds > 0, "reload_seconds", "be > 0",
              self.reload_seconds)
