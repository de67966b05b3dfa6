"""Tied scores end to end: a library in which several rows hold the same embedding lists the same rows in the same
order through ``coca-video search --json`` and the server's ``/api/search``, and a path filter keeps that order."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from coca_video.cli import main  # noqa: E402
from coca_video.config import load_config  # noqa: E402
from coca_video.model import create_model, get_model_config, get_tokenizer  # noqa: E402
from coca_video.serve.app import create_app  # noqa: E402
from coca_video.tasks import serve  # noqa: E402

QUERIES = ["a small red circle", "a big blue square moving left"]
ROWS, DISTINCT, K = 40, 8, 12


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> dict:
    """40 rows, each a copy of one of 8 random unit vectors (5 copies each, scattered), in score's Parquet layout
    with the built-in default model's provenance; every third row's path contains "kept"."""
    rng = np.random.default_rng(5)
    distinct = rng.standard_normal((DISTINCT, get_model_config("default").embed_dim)).astype(np.float32)
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    groups = rng.permutation(np.arange(ROWS) % DISTINCT)
    paths = [f"/lib/{'kept' if row % 3 == 0 else 'other'}/clip{row:02d}.mp4" for row in range(ROWS)]
    table = pa.table({"path": paths, "video_embedding": pa.array(list(distinct[groups]), pa.list_(pa.float32()))})
    path = tmp_path_factory.mktemp("ties") / "lib.embeddings.parquet"
    pq.write_table(table.replace_schema_metadata({"model": "default", "pretrained": ""}), path)
    return {"embeddings": path, "paths": paths, "distinct": distinct, "groups": groups}


@pytest.fixture(scope="module")
def client(library) -> TestClient:
    cfg = load_config(serve.ServeConfig, None, [f"embeddings={library['embeddings']}"])
    return TestClient(create_app(serve.build_server(cfg)), base_url="http://127.0.0.1")


def expected_order(library: dict, query: str) -> list[str]:
    """Every path, best first by the float64 dot product of its vector with the query's embedding (copies of a
    vector score the same), equal scores in row order."""
    with torch.no_grad():
        text = create_model("default").encode_text(get_tokenizer("default")([query]))[0].double().numpy()
    score = (library["distinct"].astype(np.float64) @ text).astype(np.float32)[library["groups"]]
    return [library["paths"][row] for row in sorted(range(ROWS), key=lambda row: (-score[row], row))]


def cli_paths(library: dict, k: int, capsys) -> dict[str, list[str]]:
    """``coca-video search --json`` hits per query, as paths in rank order."""
    assert main(["search", str(library["embeddings"]), *QUERIES, "-k", str(k), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    return {query: [r["path"] for r in rows if r["query"] == query] for query in QUERIES}


def api_paths(client: TestClient, query: str, k: int, path: str = "") -> list[str]:
    found = client.get("/api/search", params={"q": query, "k": k, "path": path})
    assert found.status_code == 200, found.text
    return [hit["path"] for hit in found.json()["results"]]


def test_the_command_and_the_server_list_tied_rows_alike_and_a_filter_keeps_the_order(library, client, capsys):
    """k=12 cuts through a group of five equal rows: the cut and the order inside each group are by row number,
    in the command, the server, and the server's filtered search (the full list restricted to matching rows)."""
    top, everything = cli_paths(library, K, capsys), cli_paths(library, ROWS, capsys)
    for query in QUERIES:
        expected = expected_order(library, query)
        assert everything[query] == expected
        assert top[query] == expected[:K]
        assert api_paths(client, query, K) == expected[:K]
        assert api_paths(client, query, ROWS) == expected
        kept = [path for path in expected if "/kept/" in path]
        assert api_paths(client, query, ROWS, path="KEPT") == kept
        assert api_paths(client, query, 4, path="kept") == kept[:4]
