"""Functions the tests run inside a decode helper process: this module imports nothing heavy (no torch), so the
helper starts them at once."""

from __future__ import annotations

import time


def report_then_sleep(count: int, seconds: float) -> None:
    """Report ``count`` units of progress, then hang for ``seconds``."""
    from coca_video.video.isolate import report_progress

    for done in range(1, count + 1):
        report_progress(done)
    time.sleep(seconds)
