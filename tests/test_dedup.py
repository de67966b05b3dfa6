"""SemDeDup (`coca-video dedup`) against an exact all-pairs search at the same threshold, on random unit vectors
with planted exact and near duplicates; the dedup file, its histogram, and its one-line errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coca_video.cli import main
from coca_video.config import load_config
from coca_video.search import read_embeddings
from coca_video.search.dedup import kept_rows
from coca_video.search.semdedup import (ASSIGN_BLOCK, MAX_POINTS_PER_CENTROID, dedup_clusters, exact_dedup, kmeans,
                                        nearest_centroid, normalise, rank_in_clusters, semdedup, training_rows)
from coca_video.tasks import dedup

pytest.importorskip("sklearn")

EPS = 0.05


def planted(seed: int = 0, distinct: int = 3000, groups: int = 200, dim: int = 64):
    """``distinct`` random unit vectors, and for the first ``groups`` of them 1-3 extra copies: exact ones, and near
    ones (noise of norm ~0.05: cosine > 0.99). Returns the (N, D) vectors, shuffled, and each row's group (the
    distinct vector it came from)."""
    rng = np.random.default_rng(seed)
    base = normalise(rng.standard_normal((distinct, dim)))
    extra = rng.integers(1, 4, size=groups)
    sources = np.repeat(np.arange(groups), extra)
    copies = base[sources] + (rng.random(len(sources)) < 0.5)[:, None] * rng.normal(0, 0.05 / np.sqrt(dim),
                                                                                     (len(sources), dim))
    vectors = np.concatenate([base, copies]).astype(np.float32)
    group = np.concatenate([np.arange(distinct), sources])
    order = rng.permutation(len(vectors))
    return vectors[order], group[order]


@pytest.mark.parametrize("clusters", [55, 8])  # 8 x 256 < 3,400 rows: k-means trains on a sample, assigns all
@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_each_planted_group_keeps_one_and_the_removed_set_is_the_exact_searchs(backend, clusters):
    if backend == "faiss":
        pytest.importorskip("faiss")  # pip install 'coca-video[faiss]'
    vectors, group = planted()
    result = semdedup(vectors, EPS, clusters=clusters, backend=backend)
    # independent of the clustering: one survivor per planted group, and no distinct vector removed
    survivors = np.bincount(group[result.keep], minlength=group.max() + 1)
    split = np.array([len(set(result.cluster[group == g])) > 1 for g in range(group.max() + 1)])
    assert (survivors[~split] == 1).all()
    assert split.sum() <= 0.05 * len(split)  # the comparison below covers almost every group
    # the exact search over ALL pairs, with the same ranking (each cluster's, farthest from the centroid first)
    order = np.concatenate(rank_in_clusters(normalise(vectors), result.cluster))
    exact = exact_dedup(vectors, EPS, order)
    unsplit = ~split[group]
    assert np.array_equal(result.keep[unsplit], exact[unsplit])
    assert (~exact).sum() == len(vectors) - (group.max() + 1)  # exact: every copy beyond the first, nothing else


def test_every_row_gets_the_centroid_nearest_to_it_block_by_block():
    rng = np.random.default_rng(4)
    unit = normalise(rng.standard_normal((2 * ASSIGN_BLOCK + 5, 8)))  # three blocks, the last of 5 rows
    centroids = rng.standard_normal((6, 8)).astype(np.float32) * rng.random((6, 1)).astype(np.float32)  # any norms
    distances = np.linalg.norm(unit[:, None, :].astype(np.float64) - centroids[None], axis=2)  # (N, 6) by hand
    assert np.array_equal(nearest_centroid(unit, centroids), distances.argmin(axis=1))


def blobs(per_blob: int = 600, count: int = 4, dim: int = 32, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``count`` tight groups of ``per_blob`` unit rows around random centres (cosine to the centre ~0.98), shuffled;
    and each row's group."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((count, dim)))
    group = rng.permutation(np.repeat(np.arange(count), per_blob))
    return normalise(centres[group] + rng.normal(0, 0.2 / np.sqrt(dim), (len(group), dim))), group


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_trains_on_256_rows_per_cluster_and_labels_the_rows_left_out_too(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    # 1,400 rows, 2 clusters: trained on 512 of them (two groups: Lloyd finds them from any initial centroids)
    unit, group = blobs(per_blob=700, count=2)
    sample = training_rows(len(unit), 2, seed=0)
    assert len(sample) == 2 * MAX_POINTS_PER_CENTROID == len(np.unique(sample))
    assert not np.array_equal(sample, training_rows(len(unit), 2, seed=1))
    assert np.array_equal(training_rows(500, 2, seed=0), np.arange(500))  # fewer rows than 2 x 256: all of them
    labels = kmeans(unit, 2, backend, seed=0)
    assert len(set(zip(group, labels))) == len(set(labels)) == 2  # each group one cluster of its own, all rows
    left_out = np.setdiff1d(np.arange(len(unit)), sample)
    assert len(left_out) == 888 and len(set(zip(group[left_out], labels[left_out]))) == 2  # the training never saw
    assert np.array_equal(kmeans(unit, 2, backend, seed=0), labels)  # the seed fixes the sample and the clusters


def test_sklearn_labels_every_row_as_its_own_predict_does():
    from sklearn.cluster import KMeans

    unit, _ = blobs(per_blob=400, count=6, seed=6)  # 2,400 rows, 3 clusters: trained on 768
    model = KMeans(3, n_init=1, max_iter=50, random_state=0).fit(unit[training_rows(len(unit), 3, seed=0)])
    assert np.array_equal(kmeans(unit, 3, "sklearn", seed=0), model.predict(unit))


def test_a_removed_row_points_at_a_kept_row_of_its_group_and_cluster_above_the_threshold():
    vectors, group = planted(seed=1, distinct=500, groups=100)
    result = semdedup(vectors, EPS, clusters=20, backend="sklearn")
    removed = np.flatnonzero(~result.keep)
    assert len(removed) and (result.similarity[removed] > 1 - EPS).all()
    assert result.keep[result.duplicate_of[removed]].all()
    assert (group[result.duplicate_of[removed]] == group[removed]).all()
    assert (result.cluster[result.duplicate_of[removed]] == result.cluster[removed]).all()
    assert (result.duplicate_of[result.keep] == -1).all()


def test_the_row_farthest_from_the_centroid_is_kept_and_a_split_pair_survives_twice():
    # four rows in a plane, the centroid at ~0.17 rad: row 3 (0.5 rad) ranks first, then row 0 and its exact copy row
    # 2 (equal distances: row order), row 1 (0.2 rad, nearest the centroid) last, a copy of row 0 (its most similar
    # row above it, the first of two equal ones)
    angle = np.array([0.0, 0.2, 0.0, 0.5])
    unit = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    one = dedup_clusters(unit, np.zeros(4, dtype=np.int64), eps=0.05)  # cos(0.2) = 0.980 > 0.95 > cos(0.5)
    assert one.keep.tolist() == [True, False, False, True]
    assert one.duplicate_of.tolist() == [-1, 0, 0, -1]
    assert np.isnan(one.similarity[3]) and one.similarity[2] == pytest.approx(1.0)  # row 3 ranks first
    split = dedup_clusters(unit, np.array([0, 0, 1, 0]), eps=0.05)  # the copy alone in its cluster: never compared
    assert split.keep[2]


def write_embeddings(path, vectors: np.ndarray, windows: bool = False, failed: int = 0) -> None:
    """An embeddings file as score writes it: path and video_embedding (+ segment windows), ``failed`` null rows."""
    count = len(vectors)
    columns = {"path": [f"/v/clip{i // 2 if windows else i}.mp4" for i in range(count + failed)],
               "video_embedding": [*map(list, vectors), *[None] * failed]}
    if windows:
        columns |= {"segment_start": [2.0 * (i % 2) for i in range(count + failed)],
                    "segment_end": [2.0 * (i % 2) + 2 for i in range(count + failed)]}
    pq.write_table(pa.table(columns), path)


def run_dedup(*args: str) -> int:
    return main(["dedup", *map(str, args)])


def test_the_dedup_file_names_the_kept_row_and_window_and_a_histogram_is_written(tmp_path):
    vectors, group = planted(seed=2, distinct=300, groups=40)
    embeddings, out = tmp_path / "scores.embeddings.parquet", tmp_path / "dedup.parquet"
    write_embeddings(embeddings, vectors, windows=True, failed=3)
    assert run_dedup(embeddings, "--eps", EPS, "--out", out, "--clusters", 10) == 0
    table = pq.read_table(out).to_pandas()
    assert len(table) == len(vectors)  # every searchable row (the 3 failed ones have no embedding)
    rows, _, _ = read_embeddings(embeddings)
    assert table.path.tolist() == rows.paths.to_pylist()
    for _, row in table[~table.keep].iterrows():
        kept = table[(table.path == row.duplicate_of) & (table.segment_start == row.duplicate_of_start)]
        assert len(kept) == 1 and kept.keep.iloc[0] and kept.segment_end.iloc[0] == row.duplicate_of_end
    assert table[table.keep].duplicate_of.isna().all()
    assert (~table.keep).sum() == len(vectors) - len(set(group))
    assert dedup.histogram_path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(kept_rows(out, rows, embeddings)) == table.keep.sum()
    assert run_dedup(embeddings, "--eps", 0.1, "--out", out) == 0  # our own output is replaced


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    vectors, _ = planted(seed=3, distinct=50, groups=5)
    embeddings, other = tmp_path / "a.embeddings.parquet", tmp_path / "b.embeddings.parquet"
    write_embeddings(embeddings, vectors)
    write_embeddings(other, vectors[:-1])
    foreign = tmp_path / "mine.parquet"
    foreign.write_bytes(b"someone else's")
    failed = tmp_path / "failed.embeddings.parquet"
    write_embeddings(failed, vectors[:0], failed=4)
    out = tmp_path / "dedup.parquet"
    cases = [
        (["--eps", "1.5", "--out", out], "eps must be in [0, 1)"),
        (["--eps", "abc", "--out", out], "eps"),
        (["--out", embeddings], "is one of the input files"),
        (["--out", foreign], "was not written by coca-video"),
        (["--out", out], "not found"),
    ]
    for extra, message in cases:
        source = tmp_path / "missing.parquet" if message == "not found" else embeddings
        assert run_dedup(source, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert run_dedup(failed, "--out", out) == 2
    assert "no video embeddings" in capsys.readouterr().err
    assert run_dedup(embeddings, "--out", out) == 0
    with pytest.raises(Exception, match="made from other rows"):
        kept_rows(out, read_embeddings(other)[0], other)
    assert main(["search", str(other), "a red circle", "--dedup", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "made from other rows" in err, err


def test_the_config_reads_back_and_rejects_unknown_backends():
    cfg = load_config(dedup.DedupConfig, None, ["embeddings=x.parquet", "eps=0.1", "kmeans=faiss"])
    assert cfg.eps == 0.1 and cfg.kmeans == "faiss"
    with pytest.raises(Exception, match="kmeans must be one of"):
        load_config(dedup.DedupConfig, None, ["kmeans=annoy"])
