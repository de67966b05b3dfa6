"""Decoding only while the model waits (``video_loader(..., gate=True)``): workers start an item only while the
consumer is inside ``next``, give back the same batches, shut down cleanly on every way out of the loop, and never
outlive a consumer that was killed while the gate was closed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from coca_video.data.video import GatedLoader, model_fills_cores, video_loader

WORK_SECONDS = 0.4  # the consumer's "model" time per batch
GRACE_SECONDS = 0.05  # a worker that passed the gate just before it closed stamps its item within this
ITEM_SECONDS = 0.1  # a worker's "decode" time per item


class StampedItems(Dataset):
    """Items that each take ITEM_SECONDS and leave the (monotonic, system-wide) time they started in ``folder``."""

    def __init__(self, folder: Path, count: int) -> None:
        self.folder, self.count = folder, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        (self.folder / f"{index}.start").write_text(repr(time.monotonic()))
        time.sleep(ITEM_SECONDS)
        return {"index": index, "path": str(os.getpid()), "label": -1, "frames": torch.full((1, 1), index), "meta": {}}


def item_starts_while_working(tmp_path: Path, gate: bool) -> tuple[list[int], int]:
    """Consume a loader over 16 stamped items, "working" WORK_SECONDS on each batch; the items that started while
    the consumer worked (past a grace for a worker that passed the gate just before it closed), and how
    many items came back."""
    loader = video_loader(StampedItems(tmp_path, 16), batch_size=2, workers=2, gate=gate)
    windows, seen = [], []
    for batch in loader:
        got = time.monotonic()
        seen += batch.indices
        time.sleep(WORK_SECONDS)
        windows.append((got + GRACE_SECONDS, time.monotonic()))
    starts = {int(p.stem): float(p.read_text()) for p in tmp_path.glob("*.start")}
    during = [i for i, t in starts.items() if any(a < t < b for a, b in windows)]
    return during, sorted(seen)


@pytest.mark.slow
def test_gated_workers_start_items_only_while_the_consumer_waits(tmp_path):
    (tmp_path / "gated").mkdir()
    (tmp_path / "plain").mkdir()
    during, seen = item_starts_while_working(tmp_path / "gated", gate=True)
    assert seen == list(range(16)) and during == []
    during, seen = item_starts_while_working(tmp_path / "plain", gate=False)  # the control: prefetch works ahead
    assert seen == list(range(16)) and len(during) >= 4


def test_a_gated_loader_gives_the_same_batches():
    items = TensorItems(torch.arange(10 * 6).reshape(10, 6))
    plain = [b.frames for b in video_loader(items, 3, workers=0)]
    gated = [b.frames for b in video_loader(items, 3, workers=2, gate=True)]
    assert len(plain) == len(gated) == 4 and all(torch.equal(a, b) for a, b in zip(plain, gated))


class TensorItems(Dataset):
    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {"index": index, "path": "", "label": -1, "frames": self.rows[index], "meta": {}}


def test_leaving_the_loop_early_opens_the_gate_so_workers_exit_by_themselves(tmp_path, monkeypatch):
    """A worker stranded at a closed gate would not take the shutdown message: the DataLoader waits for it (5 s)
    and then terminates it."""
    terminated = []
    real_terminate = multiprocessing.process.BaseProcess.terminate
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate",
                        lambda process: terminated.append(process.pid) or real_terminate(process))
    loader = video_loader(StampedItems(tmp_path, 40), batch_size=2, workers=2, gate=True)
    assert isinstance(loader, GatedLoader)
    for _ in loader:
        workers = multiprocessing.active_children()
        break  # the gate is closed here, and the workers wait at it with items of later batches
    with pytest.raises(RuntimeError, match="the model failed"):
        for _ in video_loader(StampedItems(tmp_path, 40), batch_size=2, workers=2, gate=True):
            workers += multiprocessing.active_children()
            raise RuntimeError("the model failed")
    for worker in workers:
        worker.join(timeout=60)
    assert len(workers) == 4 and not any(worker.is_alive() for worker in workers)
    assert terminated == []


KILLED_CONSUMER = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from test_decode_gate import StampedItems
from coca_video.data.video import video_loader

for batch in video_loader(StampedItems(Path(sys.argv[1]), 100), batch_size=2, workers=2, gate=True):
    import multiprocessing
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # dies while "computing": the gate is closed
"""


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status  # exited, waiting for init to reap it


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_waiting_at_a_closed_gate_do_not_outlive_a_killed_consumer(tmp_path):
    result = subprocess.run([sys.executable, "-c", KILLED_CONSUMER, str(tmp_path), str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(gone(pid) for pid in pids), f"workers {pids} outlived their killed parent"


def test_a_model_fills_the_cores_on_the_cpu_with_a_thread_per_core(monkeypatch):
    # torch's thread count is read, not set: setting it is process-wide, and later tests would inherit it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)
    assert model_fills_cores("cpu") and model_fills_cores(torch.device("cpu"))
    assert not model_fills_cores("cuda") and not model_fills_cores("cuda:1")  # the GPU computes; the CPU is free
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores - 1)  # a core left for decoding: no gate
    assert not model_fills_cores("cpu")
