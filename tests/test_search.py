"""Search over an embeddings file: many queries share one text model, and give what single queries give."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from coca_video.cli import main
from coca_video.model import get_model_config
from coca_video import search as library
from coca_video.model import create_model, get_tokenizer
from coca_video.search import query as query_module

QUERIES = ["a small red circle", "a big blue square", "a green triangle"]


@pytest.fixture
def embeddings(tmp_path):
    """An embeddings file of six random unit vectors of the default model's width, with segments and provenance."""
    dim = get_model_config("default").embed_dim
    vectors = F.normalize(torch.randn(6, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    table = pa.table({"path": [f"v{i}.mp4" for i in range(6)],
                      "video_embedding": pa.array(vectors.tolist(), pa.list_(pa.float32())),
                      "segment_start": [0.0, 2.0, 0.0, 2.0, 0.0, 2.0],
                      "segment_end": [2.0, 4.0, 2.0, 4.0, 2.0, 4.0]})
    path = tmp_path / "s.embeddings.parquet"
    pq.write_table(table.replace_schema_metadata({"model": "default", "pretrained": ""}), path)
    return path


@pytest.fixture(scope="module")
def default_model():
    return create_model("default")


@pytest.fixture
def model_count(monkeypatch, default_model):
    """The calls search makes to create_model (each answered with the same default model, to keep tests fast)."""
    calls = []

    def counting(name, pretrained=None, device=None):
        assert (name, pretrained, device) == ("default", None, None)
        calls.append(name)
        return default_model

    monkeypatch.setattr(query_module, "create_model", counting)
    return calls


def test_many_queries_create_the_model_once_and_match_single_queries(embeddings, model_count):
    together = library.search(embeddings, QUERIES[:2], k=4)
    assert len(model_count) == 1
    alone = [library.search(embeddings, query, k=4) for query in QUERIES[:2]]
    assert len(model_count) == 3
    assert [[h.path for h in hits] for hits in together] == [[h.path for h in hits] for hits in alone]
    for hits, single in zip(together, alone):
        assert [h.score for h in hits] == pytest.approx([h.score for h in single], abs=1e-6)
        assert [h.start for h in hits] == [h.start for h in single]


def test_cli_json_rows_from_arguments_and_a_queries_file(embeddings, tmp_path, capsys, model_count):
    queries_file = tmp_path / "queries.txt"
    queries_file.write_text(f"{QUERIES[1]}\n\n{QUERIES[2]}\n")
    assert main(["search", str(embeddings), QUERIES[0], "--queries", str(queries_file), "-k", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(model_count) == 1
    assert [(r["query"], r["rank"]) for r in rows] == [(q, rank) for q in QUERIES for rank in (1, 2)]
    assert set(rows[0]) == {"query", "rank", "path", "score", "start", "end"}
    expected = library.search(embeddings, QUERIES[2], k=2)
    assert [(r["path"], r["start"], r["end"]) for r in rows[4:]] == [(h.path, h.start, h.end) for h in expected]


def test_cli_out_writes_the_rows_and_may_replace_its_own_file_but_not_another(embeddings, tmp_path, capsys,
                                                                             model_count):
    out = tmp_path / "hits.json"
    assert main(["search", str(embeddings), "red", "blue", "-k", "1", "--out", str(out)]) == 0
    assert [r["query"] for r in json.loads(out.read_text())] == ["red", "blue"]
    assert main(["search", str(embeddings), "green", "-k", "1", "--out", str(out)]) == 0  # its own: replaced
    assert [r["query"] for r in json.loads(out.read_text())] == ["green"]
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert main(["search", str(embeddings), "red", "--out", str(notes)]) == 2
    assert notes.read_text() == '{"mine": 1}'
    assert "file exists and was not written by coca-video" in capsys.readouterr().err


def test_no_query_at_all_is_a_one_line_error(embeddings, capsys):
    assert main(["search", str(embeddings)]) == 2
    assert capsys.readouterr().err.strip() == "coca-video search: error: search: give a query, or --queries FILE " \
                                              "with one per line"


def test_the_text_model_gets_the_weights_that_made_the_embeddings_unless_told_otherwise(embeddings, monkeypatch,
                                                                                        default_model, capsys):
    """The file's provenance names model and weights: search loads both; --pretrained replaces the weights; another
    --model does not inherit weights meant for the file's model."""
    table = pq.read_table(embeddings)
    pq.write_table(table.replace_schema_metadata({"model": "default", "pretrained": "mine.safetensors"}), embeddings)
    calls = []
    monkeypatch.setattr(query_module, "create_model", lambda name, pretrained=None, device=None:
                        calls.append((name, pretrained)) or default_model)
    default_tokenizer = get_tokenizer("default")
    monkeypatch.setattr(query_module, "get_tokenizer", lambda name: default_tokenizer)  # every model answered by default's
    library.search(embeddings, "a red circle", k=1)
    assert main(["search", str(embeddings), "a red circle", "--pretrained", "other.bin"]) == 0
    assert main(["search", str(embeddings), "a red circle", "--model", "synthetic_tiny"]) == 0
    capsys.readouterr()
    assert calls == [("default", "mine.safetensors"), ("default", "other.bin"), ("synthetic_tiny", None)]


def test_failed_rows_are_skipped_and_each_hit_keeps_its_own_path_and_window(tmp_path):
    """Rows 1 and 4 failed (no embedding): the rows read are the other four, each with its own vector and window, and
    a query equal to row 3's vector ranks row 3 first, then the others by their cosine computed here."""
    vectors = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    column = [None if i in (1, 4) else v for i, v in enumerate(vectors.tolist())]
    table = pa.table({"path": [f"v{i}.mp4" for i in range(6)],
                      "video_embedding": pa.array(column, pa.list_(pa.float32())),
                      "segment_start": [float(i) for i in range(6)], "segment_end": [i + 1.0 for i in range(6)]})
    path = tmp_path / "s.embeddings.parquet"
    pq.write_table(table, path)
    rows, read, _ = library.read_embeddings(path)
    kept = [0, 2, 3, 5]
    assert [(hit.path, hit.start, hit.end) for hit in rows] == [(f"v{i}.mp4", float(i), i + 1.0) for i in kept]
    np.testing.assert_array_equal(read, vectors[kept].numpy())
    ranked = rows.hits(*library.rank(read, vectors[3].numpy(), k=4))
    expected = sorted(kept, key=lambda i: -float(vectors[i] @ vectors[3]))
    assert [hit.path for hit in ranked] == [f"v{i}.mp4" for i in expected] and ranked[0].start == 3.0
    assert ranked[0].score == pytest.approx(1.0, abs=1e-6)


def test_search_and_serve_choose_the_query_model_by_one_rule():
    """The text model of a query is the one named in the embeddings' provenance, with its weights, unless the user
    names another (then no weights are taken from the provenance); serve's model block follows the same rule."""
    from coca_video.config import ModelConfig
    from coca_video.search import query_model
    from coca_video.tasks.serve import ServeConfig, model_block

    made_by = {"model": "coca_ViT-B-32", "pretrained": "/weights/coca_b32.bin"}
    assert query_model(None, None, made_by) == ("coca_ViT-B-32", "/weights/coca_b32.bin")
    assert query_model("coca_ViT-B-32", None, made_by) == ("coca_ViT-B-32", "/weights/coca_b32.bin")
    assert query_model("default", None, made_by) == ("default", None)
    assert query_model(None, None, {}) == ("default", None)
    for given, expected in ((ModelConfig(), ("coca_ViT-B-32", "/weights/coca_b32.bin")),
                            (ModelConfig("coca_ViT-B-32"), ("coca_ViT-B-32", "/weights/coca_b32.bin")),
                            (ModelConfig("coca_ViT-L-14"), ("coca_ViT-L-14", None))):
        block = model_block(ServeConfig(model=given), made_by)
        assert (block.name, block.pretrained) == expected
