"""Search of a scored video library: text (or any) queries against the rows of an embeddings file, with one
ranking and one tie rule for every caller (``coca-video search``, ``coca-video serve``, the index's rescoring).

    rows    the searchable rows of an embeddings file and their (N, D) embeddings; a hit
    rank    rank(vectors, queries, k, rows): best first, equal scores in row order
    index   the int8 index beside a file: built, trusted only while fresh, its candidates rescored by rank
    query   the text model of a file's queries and their encoding; a queries file
    text    search(): the command's text search, and its JSON rows
    semdedup  SemDeDup over (N, D) vectors (k-means, then pairs within each cluster), and its exact all-pairs twin
    dedup   a dedup file (coca-video dedup's table) and the rows a search shows through it

    from coca_video.search import search
    for hit in search("scores.embeddings.parquet", "a dog catching a frisbee", k=5):
        print(hit.score, hit)
"""

from .index import INDEX_MIN_QUERIES, INDEX_MIN_ROWS, build_index, fresh_index, index_candidates, rank_through
from .query import encode_queries, query_model, read_queries
from .rank import largest_norm, rank
from .rows import EmbeddingRows, SearchHit, read_embeddings
from .text import SEARCH_ROW_KEYS, is_search_output, search, search_rows

__all__ = [
    "INDEX_MIN_QUERIES", "INDEX_MIN_ROWS", "SEARCH_ROW_KEYS", "EmbeddingRows", "SearchHit", "build_index",
    "encode_queries", "fresh_index", "index_candidates", "is_search_output", "largest_norm", "query_model", "rank",
    "rank_through", "read_embeddings", "read_queries", "search", "search_rows",
]
