"""The crash-safe result store: parts, compaction, newest row wins, merge into a table and an embeddings sidecar."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from coca_video.data.results import PartStore, embeddings_path, merge


def row(path: str, status: str = "ok", value: float = 0.0, stamp: float | None = None) -> dict:
    out = {"path": path, "size": 1, "mtime": 1.0, "status": status, "error": "", "top1_score": value,
           "video_embedding": [value, 1.0]}
    if stamp is not None:
        out["scored_at"] = stamp
    return out


def test_compaction_keeps_every_row_and_bounds_the_number_of_parts(tmp_path):
    store = PartStore(tmp_path / "scores.parquet", fanout=4)
    for i in range(37):
        store.append([row(f"v{i:03d}", value=float(i))])
    # 37 = 2*16 + 1*4 + 1: two level-2 parts, one level-1 part, one level-0 part
    assert len(store.parts()) == 4
    table = store.read().to_pandas()
    assert sorted(table.path) == [f"v{i:03d}" for i in range(37)]
    assert dict(zip(table.path, table.top1_score))["v017"] == 17.0


def test_newest_row_per_path_wins_and_only_ok_rows_count_as_done(tmp_path):
    store = PartStore(tmp_path / "scores.parquet")
    store.append([row("a", "error", stamp=1.0), row("b", stamp=1.0)])
    assert store.done_keys() == {("b", 1, 1.0)}
    store.append([row("a", "ok", value=5.0, stamp=2.0)])
    assert store.done_keys() == {("a", 1, 1.0), ("b", 1, 1.0)}
    table = store.read().to_pandas().set_index("path")
    assert table.loc["a", "top1_score"] == 5.0 and len(table) == 2


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_merge_writes_the_table_and_the_sidecar_for_the_current_files(tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    PartStore(out, rank=0).append([row("a", value=1.0), row("gone", value=9.0)])
    PartStore(out, rank=1).append([row("b", "error", value=2.0)])
    merge(out, paths=["a", "b"], metadata={"model": "default"})
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.path) == ["a", "b"] and list(table.status) == ["ok", "error"]
    assert "video_embedding" not in table.columns and "scored_at" not in table.columns
    sidecar = pq.read_table(embeddings_path(out))
    assert sidecar.column("path").to_pylist() == ["a", "b"]
    assert sidecar.column("video_embedding").to_pylist()[0] == [1.0, 1.0]
    assert sidecar.schema.metadata[b"model"] == b"default"


def test_a_crash_during_a_write_leaves_no_partial_part(tmp_path, monkeypatch):
    store = PartStore(tmp_path / "scores.parquet")
    store.append([row("a")])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.append([row("b")])
    monkeypatch.undo()
    assert sorted(store.read().to_pandas().path) == ["a"]


def test_a_whole_file_row_beside_window_rows_keeps_its_three_part_key(tmp_path):
    """A store holding both windows and whole files (a segmented run where one file's headers failed, Kinetics
    clips mixing trimmed files and windows): the whole file's key has no window start, as ScoreItem spells it."""
    from coca_video.scoring import ScoreItem

    store = PartStore(tmp_path / "out.parquet")
    store.append([{"path": "a.mp4", "size": 1, "mtime": 2.0, "segment_start": 0.0, "segment_end": 10.0,
                   "status": "ok"},
                  {"path": "b.mp4", "size": 3, "mtime": 4.0, "status": "ok"}])
    done = store.done_keys()
    assert ScoreItem(("a.mp4", 1, 2.0), 0.0, 10.0).stored() in done
    assert ScoreItem(("b.mp4", 3, 4.0)).stored() in done  # was ("b.mp4", 3, 4.0, None): rescored on every rerun


def test_embeddings_are_stored_as_float32_and_read_beside_an_older_runs_float64_part(tmp_path):
    import numpy as np
    import pyarrow as pa

    from coca_video.io import atomic_write_table

    out = tmp_path / "scores.parquet"
    store = PartStore(out)
    computed = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)  # as the model gives them
    old = pa.Table.from_pylist([row("old") | {"video_embedding": computed[0].tolist(), "scored_at": 1.0}])
    assert old.schema.field("video_embedding").type.value_type == pa.float64()  # as a part of an earlier run holds
    atomic_write_table(old, store.folder / "rank0-L0-000001.parquet")
    store.append([row("new") | {"video_embedding": computed[1].tolist(),
                                "frame_embeddings": [computed[1].tolist()] * 2}])
    assert pq.read_schema(store.parts()[-1]).field("video_embedding").type.value_type == pa.float32()
    merge(out)
    sidecar = pq.read_table(embeddings_path(out))
    assert sidecar.schema.field("video_embedding").type.value_type == pa.float32()
    assert sidecar.schema.field("frame_embeddings").type.value_type.value_type == pa.float32()
    stored = dict(zip(sidecar.column("path").to_pylist(), sidecar.column("video_embedding").to_pylist()))
    assert stored == {"old": computed[0].tolist(), "new": computed[1].tolist()}  # every value exactly as computed


def test_float16_embeddings_stay_float16_in_parts_and_sidecar_and_read_back_as_float32(tmp_path):
    """embedding_dtype=float16: the scorer's float16 arrays are neither widened by the store nor by a compaction,
    and search reads the sidecar's float16 lists as the same values in float32."""
    import numpy as np
    import pyarrow as pa

    from coca_video.search.rows import embedding_matrix

    out = tmp_path / "scores.parquet"
    store = PartStore(out, fanout=2)
    computed = np.random.default_rng(1).standard_normal((3, 2, 8)).astype(np.float16)  # (rows, frames, D)
    for i in range(3):  # 3 appends at fanout 2: one compaction on the way
        store.append([row(f"v{i}") | {"video_embedding": computed[i, 0], "frame_embeddings": list(computed[i])}])
    assert len(store.parts()) == 2
    for part in store.parts():
        assert pq.read_schema(part).field("video_embedding").type.value_type == pa.float16()
    merge(out)
    sidecar = pq.read_table(embeddings_path(out))
    assert sidecar.schema.field("video_embedding").type.value_type == pa.float16()
    assert sidecar.schema.field("frame_embeddings").type.value_type.value_type == pa.float16()
    matrix = embedding_matrix(sidecar.column("video_embedding"), sidecar.num_rows)
    assert matrix.dtype == np.float32 and np.array_equal(matrix, computed[:, 0].astype(np.float32))
    frames = np.stack([np.stack(cell) for cell in sidecar.column("frame_embeddings").to_pylist()])
    assert np.array_equal(frames, computed)


def test_a_store_that_scored_nothing_leaves_no_parts_folder_and_one_that_scored_keeps_it(tmp_path):
    out = tmp_path / "s.parquet"
    folder = tmp_path / "s.parquet.parts"
    with pytest.raises(RuntimeError):  # e.g. the model failed to load, after the settings were recorded
        with PartStore(out).locked():
            PartStore(out).check_settings({"model": "x"})
            assert folder.is_dir()
            raise RuntimeError("model did not load")
    assert not folder.exists()
    with PartStore(out).locked():
        PartStore(out).check_settings({"model": "x"})
        PartStore(out).append([row("a.mp4")])
    assert PartStore(out).read().num_rows == 1 and PartStore(out).settings() == {"model": "x"}  # the store stays
