"""Search through an approximate index (coca-video index): the same hits as exact search on clustered data, never
used when stale or for a few queries, segment windows kept, a one-line error without usearch, and the int8 scan's
candidates hold the exact neighbours."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from coca_video.cli import main
from coca_video.data import ann_index
from coca_video.data.ann_index import index_paths
from coca_video import search as library
from coca_video.search import index as index_module
from coca_video.search import text as text_module

CLUSTERS, PER_CLUSTER, DIM = 20, 100, 32
EXACT = 10**9  # an index_min_rows no file reaches: exact search


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_embeddings(path, vectors: np.ndarray) -> None:
    """An embeddings file of ``vectors``, each row a 2 s segment of one of 100 videos."""
    rows = len(vectors)
    table = pa.table({"path": [f"v{i % 100:03d}.mp4" for i in range(rows)],
                      "segment_start": [2.0 * (i // 100) for i in range(rows)],
                      "segment_end": [2.0 * (i // 100) + 2.0 for i in range(rows)],
                      "video_embedding": pa.array(list(vectors), pa.list_(pa.float32()))})
    pq.write_table(table.replace_schema_metadata({"model": "default", "pretrained": ""}), path)


@pytest.fixture
def centres():
    return unit(np.random.default_rng(0).standard_normal((CLUSTERS, DIM)))


@pytest.fixture
def clustered(tmp_path, centres):
    """2,000 unit vectors in 20 tight clusters, as an embeddings file."""
    noise = np.random.default_rng(1).standard_normal((CLUSTERS * PER_CLUSTER, DIM)) * 0.05
    path = tmp_path / "s.embeddings.parquet"
    write_embeddings(path, unit(np.repeat(centres, PER_CLUSTER, axis=0) + noise))
    return path


@pytest.fixture
def queries(monkeypatch, centres):
    """Text queries encode as points near the cluster centres (no text model is created)."""
    near = unit(centres + np.random.default_rng(2).standard_normal(centres.shape) * 0.02)
    monkeypatch.setattr(text_module, "encode_queries", lambda texts, model, pretrained: torch.from_numpy(near[:len(texts)]))
    return [f"query {i}" for i in range(CLUSTERS)]


@pytest.fixture
def index_uses(monkeypatch):
    """How many times search asked an index for candidates."""
    calls = []
    real = index_module.index_candidates
    monkeypatch.setattr(index_module, "index_candidates", lambda *args: calls.append(1) or real(*args))
    return calls


@pytest.mark.needs("usearch")
def test_index_results_equal_exact_results_near_cluster_centres(clustered, queries, index_uses, capsys):
    assert main(["index", str(clustered)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {index_paths(clustered)[0]} (2000 rows, metric cos")
    exact = library.search(clustered, queries, k=10, index_min_rows=EXACT)
    assert not index_uses
    approx = library.search(clustered, queries, k=10, index_min_rows=100)
    assert index_uses == [1]
    assert [[(h.path, h.start, h.end) for h in hits] for hits in approx] == \
           [[(h.path, h.start, h.end) for h in hits] for hits in exact]
    assert [h.score for hits in approx for h in hits] == pytest.approx([h.score for hits in exact for h in hits],
                                                                       abs=1e-5)
    assert capsys.readouterr().err == ""


@pytest.mark.needs("usearch")
def test_stale_index_is_not_used_and_warns_once(clustered, queries, index_uses, capsys):
    library.build_index(clustered)
    write_embeddings(clustered, unit(np.random.default_rng(3).standard_normal((CLUSTERS * PER_CLUSTER, DIM))))
    approx = library.search(clustered, queries, k=5, index_min_rows=100)
    assert not index_uses
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stale" in err and f"coca-video index {clustered}" in err
    assert approx == library.search(clustered, queries, k=5, index_min_rows=EXACT)


@pytest.mark.needs("usearch")
def test_segment_rows_come_back_with_their_times_through_the_index(clustered, monkeypatch, index_uses):
    library.build_index(clustered, metric="ip")
    table = pq.read_table(clustered)
    row = 1234  # v034.mp4, segment 24-26 s
    vector = np.asarray(table.column("video_embedding")[row].as_py(), dtype=np.float32)
    monkeypatch.setattr(text_module, "encode_queries", lambda texts, model, pretrained: torch.from_numpy(vector[None]))
    monkeypatch.setattr(text_module, "INDEX_MIN_QUERIES", 1)
    best = library.search(clustered, "that segment", k=3, index_min_rows=100)[0]
    assert index_uses == [1]
    assert (best.path, best.start, best.end) == ("v034.mp4", 24.0, 26.0)
    assert best.score == pytest.approx(1.0, abs=1e-5)
    assert str(best) == "v034.mp4 00:24-00:26"


def test_index_without_usearch_is_a_one_line_error_and_search_scans(clustered, queries, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "usearch", None)  # import usearch.index now raises ImportError
    monkeypatch.setitem(sys.modules, "usearch.index", None)
    assert main(["index", str(clustered)]) == 2
    assert capsys.readouterr().err == "coca-video index: error: usearch is not installed; pip install " \
                                      "'coca-video[index]'\n"
    assert not any(p.exists() for p in index_paths(clustered))
    assert len(library.search(clustered, queries, k=3, index_min_rows=100)) == len(queries)


@pytest.mark.needs("usearch")
def test_a_search_of_few_queries_compares_every_row_without_checking_the_index(clustered, queries, index_uses,
                                                                               capsys):
    library.build_index(clustered)
    write_embeddings(clustered, unit(np.random.default_rng(3).standard_normal((CLUSTERS * PER_CLUSTER, DIM))))
    few = queries[:library.INDEX_MIN_QUERIES - 1]
    assert library.search(clustered, few, k=5, index_min_rows=100) == library.search(clustered, few, k=5,
                                                                                     index_min_rows=EXACT)
    assert not index_uses
    assert capsys.readouterr().err == ""  # the stale index was never looked at


def codes_of(vectors: np.ndarray, metric: str) -> np.ndarray:
    return ann_index.quantise_rows(vectors, metric, np.empty(vectors.shape, np.int8))


@pytest.mark.needs("usearch")
def test_the_int8_scan_proposes_the_exact_top_10_of_random_vectors():
    rng = np.random.default_rng(4)
    vectors, queries = unit(rng.standard_normal((5000, 64))), unit(rng.standard_normal((20, 64)))
    found = ann_index.nearest(codes_of(vectors, "cos"), queries, 50)
    for query, rows in zip(queries, found):
        assert set(np.argsort(-(vectors @ query))[:10]) <= set(rows.tolist())


@pytest.mark.needs("usearch")
def test_an_ip_index_ranks_by_dot_product_and_a_cos_index_by_angle():
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    vectors = np.array([[0.5, 0.1], [2.0, 1.5]], dtype=np.float32)  # the first is nearer in angle, the second in dot
    assert ann_index.nearest(codes_of(vectors, "ip"), query, 2)[0].tolist() == [1, 0]
    assert ann_index.nearest(codes_of(vectors, "cos"), query, 2)[0].tolist() == [0, 1]


def test_the_row_digest_is_the_one_indexes_already_built_recorded():
    """Row ids are now read a column at a time and hashed at once; an index built before (ids hashed a row at a
    time from each hit's path and window) must still be fresh."""
    import hashlib

    import pyarrow as pa

    from coca_video.data.ann_index import rows_digest
    from coca_video.search import EmbeddingRows
    from coca_video.search.index import search_row_ids

    def row_by_row(rows) -> str:  # the digest as indexes recorded it
        digest = hashlib.sha256()
        for hit in rows:
            digest.update(f"{hit.path}\t{hit.start}\t{hit.end}".encode("utf-8", "surrogatepass") + b"\n")
        return digest.hexdigest()

    paths = pa.array(["/videos/a.mp4", "/videos/été/b c.mp4", "/videos/a.mp4"])
    whole = EmbeddingRows(paths)
    segments = EmbeddingRows(paths, pa.array([0.0, 0.0, 10.5]), pa.array([10.5, 3.0, 21.0]))
    for rows in (whole, segments):
        assert rows_digest(search_row_ids(rows)) == row_by_row(rows)
    assert rows_digest(search_row_ids(whole)) != rows_digest(search_row_ids(segments))
    assert rows_digest([]) == hashlib.sha256(b"").hexdigest()
