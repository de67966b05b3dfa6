"""The one ranking of search and serve against answers worked out here: best score first, equal scores in row order
(lower row number first), the same order for a row subset, a batch of queries, or one query at a time, and equal
rows equal wherever they sit in the matrix."""

from __future__ import annotations

import numpy as np
import pytest

from coca_video.search import rank


def brute_force(scores: np.ndarray, k: int, rows=None) -> list[int]:
    """The k best row numbers by the tie rule: score descending, then row number."""
    pool = range(len(scores)) if rows is None else rows
    return sorted(pool, key=lambda row: (-scores[row], row))[:k]


def test_many_tied_scores_rank_by_score_then_row_with_and_without_a_row_subset():
    """Scores with many ties (rounded to one decimal), k=7 of 50 and other cuts: the vectors are the identity, so a
    query's dot products are exactly its scores."""
    rng = np.random.default_rng(0)
    vectors = np.eye(50)
    for trial in range(300):
        queries = np.round(rng.standard_normal((3, 50)), 1)  # (Q, N): ~20 distinct values among 50
        k = 7 if trial % 3 else int(rng.integers(1, 60))
        best, scores = rank(vectors, queries, k)
        for query, found, values in zip(queries, best, scores):
            assert found.tolist() == brute_force(query, k)
            assert values.tolist() == [query[row] for row in found]
        subset = rng.permutation(50)[:int(rng.integers(0, 51))]  # a filter's rows, in any order
        best, scores = rank(vectors, queries, k, subset)
        for query, found in zip(queries, best):
            assert found.tolist() == brute_force(query, k, subset.tolist())
        alone = rank(vectors, queries[1], k, subset)[0]  # one query given as (D,)
        assert alone.tolist() == brute_force(queries[1], k, subset.tolist())


def test_ties_straddling_the_cut_are_decided_by_row_number():
    """Rows 0-9 all score 1.0 and k=3: the answer is rows 0, 1, 2, whichever three argpartition happens to pick."""
    scores = np.zeros(40)
    scores[[33, 5, 17, 0, 9, 2, 21, 1, 38, 12]] = 1.0
    scores[[6, 7]] = 2.0
    best, values = rank(np.eye(40), scores, 5)
    assert best.tolist() == [6, 7, 0, 1, 2] and values.tolist() == [2.0, 2.0, 1.0, 1.0, 1.0]
    assert rank(np.eye(40), scores, 5, np.array([38, 33, 21, 17, 12]))[0].tolist() == [12, 17, 21, 33, 38]


def test_per_query_rows_rank_each_query_among_its_own():
    """An index's candidates: one array of rows per query, each query ranked among its own only."""
    queries = np.array([[3.0, 1.0, 1.0, 2.0], [0.0, 5.0, 5.0, 5.0]])
    best, scores = rank(np.eye(4), queries, 2, [np.array([3, 2, 1]), np.array([3, 2, 0])])
    assert best.tolist() == [[3, 1], [2, 3]] and scores.tolist() == [[2.0, 1.0], [5.0, 5.0]]


@pytest.mark.parametrize("dim", [7, 64, 128, 512])
def test_copies_of_a_vector_tie_wherever_they_sit_and_order_by_row(dim):
    """Float32 matrix products give copies of one vector scores a bit apart depending on where they sit in the
    matrix (OpenBLAS); the ranking must not: the answer ranks each distinct vector by its float64 dot product
    (rounded to float32), copies in row order, the same for one query, a batch, and a row subset."""
    rng = np.random.default_rng(dim)
    for rows in (5, 9, 31, 250):
        distinct = rng.standard_normal((max(1, rows // 4), dim)).astype(np.float32)
        distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
        groups = rng.integers(0, len(distinct), rows)
        vectors = distinct[groups]  # (N, D): every row a copy of one of the distinct vectors
        queries = rng.standard_normal((6, dim)).astype(np.float32)
        subset = np.flatnonzero(rng.random(rows) < 0.5)
        batch = rank(vectors, queries, rows)[0]
        for query, in_batch in zip(queries, batch):
            group_score = (distinct.astype(np.float64) @ query.astype(np.float64)).astype(np.float32)
            expected = brute_force(group_score[groups], rows)
            assert in_batch.tolist() == expected
            assert rank(vectors, query, 4)[0].tolist() == expected[:4]
            assert rank(vectors, query, rows, subset)[0].tolist() == [r for r in expected if r in set(subset)]


def test_no_rows_or_k_beyond_them():
    vectors = np.eye(3, dtype=np.float32)
    query = np.array([0.5, 0.7, 0.1], dtype=np.float32)
    assert rank(vectors, query, 10)[0].tolist() == [1, 0, 2]
    best, scores = rank(vectors, query, 10, np.array([], dtype=np.int64))
    assert best.shape == scores.shape == (0,)


def test_a_broken_row_ranks_last_instead_of_breaking_the_cut():
    vectors = np.eye(4, dtype=np.float32)
    vectors[2] = np.nan  # e.g. an embedding of a frame that decoded to nothing
    query = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    assert rank(vectors, query, 3)[0].tolist() == [3, 1, 0]
    assert rank(vectors, query, 4)[0].tolist() == [3, 1, 0, 2]
