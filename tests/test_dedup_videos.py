"""`coca-video dedup` end to end: eight synthetic clips plus two of them re-encoded at another quality (crf 35) and
size (96 px instead of 64), scored with the built-in default model as whole videos and as 2 s segments; then
`search --dedup` and the server's `/api/search` hide exactly the removed rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from coca_video.cli import main
from coca_video.config import load_config
from coca_video.data.synthetic import SyntheticVideos
from coca_video.search import read_embeddings, search
from coca_video.search.semdedup import exact_dedup, rank_in_clusters, normalise
from coca_video.tasks import dedup, score
from coca_video.video import write_video

pytest.importorskip("sklearn")

EPS = 0.05
COPIED = (0, 1)  # the clips re-encoded as copy0.mp4, copy1.mp4


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> dict[str, Path]:
    """Eight distinct clips (distinct scenes, seed 5) and the two copies, scored whole and in 2 s segments."""
    root = tmp_path_factory.mktemp("dedup")
    videos = root / "videos"
    videos.mkdir()
    clips = SyntheticVideos(8, size=64, num_frames=32, seed=5, split="test", p_reference=0.0)
    for index in range(8):
        write_video(videos / f"clip{index}.mp4", clips[index][0], fps=8)
    for index in COPIED:
        larger = np.stack([np.asarray(Image.fromarray(f).resize((96, 96), Image.BICUBIC)) for f in clips[index][0]])
        write_video(videos / f"copy{index}.mp4", larger, fps=8, options={"crf": "35"})
    files = {}
    for name, extra in (("whole", []), ("segments", ["segment_seconds=2"])):
        out = root / f"{name}.parquet"
        score.run(load_config(score.ScoreConfig, None, [f"videos={videos}", f"out={out}", "decode.num_frames=4",
                                                        "decode.workers=0", *extra]))
        files[name] = score.embeddings_path(out)
    return files


def source_video(path: str) -> str:
    """The clip a row was made from: copyN.mp4 is clipN.mp4 re-encoded."""
    return Path(path).name.replace("copy", "clip")


def run_dedup(embeddings: Path, out: Path, clusters: int) -> tuple[np.ndarray, list[str]]:
    """Dedup through the command; the keep column and each row's source clip."""
    assert main(["dedup", str(embeddings), "--eps", str(EPS), "--out", str(out), "--clusters", str(clusters)]) == 0
    table = pq.read_table(out)
    return np.array(table.column("keep").to_pylist()), [source_video(p) for p in table.column("path").to_pylist()]


@pytest.mark.parametrize("rows", ["whole", "segments"])
def test_a_reencoded_copy_goes_and_every_distinct_clip_stays(library, tmp_path, rows):
    """Whole videos: each copy is removed or its original is, never both, nothing else. Segments: the two windows of
    one of these (static) clips are near-duplicates too, so each source clip keeps exactly one window of its own and
    its copy's four. Both as the exact all-pairs search finds."""
    embeddings = library[rows]
    out = tmp_path / "dedup.parquet"
    keep, sources = run_dedup(embeddings, out, clusters=3)
    kept_per_source = {s: int(keep[[i for i, x in enumerate(sources) if x == s]].sum()) for s in set(sources)}
    assert kept_per_source == {f"clip{i}.mp4": 1 for i in range(8)}
    if rows == "whole":
        assert sorted(np.array(sources)[~keep].tolist()) == [f"clip{i}.mp4" for i in COPIED]
    _, vectors, _ = read_embeddings(embeddings)
    cluster = pq.read_table(out).column("cluster").to_numpy()
    groups = {s: set(cluster[[i for i, x in enumerate(sources) if x == s]]) for s in set(sources)}
    assert all(len(found) == 1 for found in groups.values())  # no group split by these 3 clusters: the same set
    order = np.concatenate(rank_in_clusters(normalise(vectors), cluster))
    assert np.array_equal(keep, exact_dedup(vectors, EPS, order))


@pytest.fixture(scope="module")
def removed(library, tmp_path_factory) -> dict:
    """The segment rows' dedup file and the (path, start) of the rows it removed: one cluster, so every pair is
    compared whichever k-means is installed (faiss's 5 clusters of these 20 rows split a group; scikit-learn's not)."""
    out = tmp_path_factory.mktemp("dd") / "dedup.parquet"
    assert main(["dedup", str(library["segments"]), "--eps", str(EPS), "--out", str(out), "--clusters", "1"]) == 0
    table = pq.read_table(out).to_pandas()
    gone = set(zip(table.path[~table.keep], table.segment_start[~table.keep]))
    assert len(gone) == 20 - 8
    return {"out": out, "gone": gone}


def test_search_with_dedup_is_the_full_ranking_without_the_removed_rows(library, removed, capsys):
    query = "a blue circle"
    full = [(h.path, h.start, h.score) for h in search(library["segments"], query, k=20)]
    assert main(["search", str(library["segments"]), query, "-k", "20", "--json", "--dedup", str(removed["out"])]) == 0
    shown = [(r["path"], r["start"], r["score"]) for r in json.loads(capsys.readouterr().out)]
    assert shown == [hit for hit in full if hit[:2] not in removed["gone"]]
    assert len(shown) == 8


def test_the_server_hides_the_removed_rows_in_every_search(library, removed):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from coca_video.serve.app import create_app
    from coca_video.tasks import serve

    plain = TestClient(create_app(serve.build_server(load_config(serve.ServeConfig, None, [
        f"embeddings={library['segments']}"]))), base_url="http://127.0.0.1")
    deduped = TestClient(create_app(serve.build_server(load_config(serve.ServeConfig, None, [
        f"embeddings={library['segments']}", f"dedup={removed['out']}"]))), base_url="http://127.0.0.1")
    for params in ({"q": "a blue circle", "k": 20}, {"q": "a red square", "k": 3, "offset": 2},
                   {"q": "a shape", "k": 20, "path": "copy"}):
        full = plain.get("/api/search", params={**params, "k": 20, "offset": 0}).json()["results"]
        expected = [(h["path"], h["start"]) for h in full if (h["path"], h["start"]) not in removed["gone"]]
        found = deduped.get("/api/search", params=params).json()
        offset = params.get("offset", 0)
        assert [(h["path"], h["start"]) for h in found["results"]] == expected[offset:offset + params["k"]]
        assert found["total"] == len(expected)
    kept = deduped.get("/api/search", params={"q": "a shape", "k": 20}).json()["results"][0]["id"]
    similar = deduped.get("/api/similar", params={"id": kept, "k": 20}).json()["results"]
    assert similar and not {(h["path"], h["start"]) for h in similar} & removed["gone"]


def test_a_dedup_file_of_other_rows_is_refused_by_serve(library, removed, capsys):
    other = Path(removed["out"]).with_name("whole.dedup.parquet")
    assert main(["dedup", str(library["whole"]), "--out", str(other)]) == 0
    capsys.readouterr()
    pytest.importorskip("fastapi")
    assert main(["serve", str(library["segments"]), "--dedup", str(other), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "made from other rows" in err, err
    assert dedup.histogram_path(other).is_file()
