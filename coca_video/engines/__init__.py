"""Where the row rule (:mod:`coca_video.scoring`) runs: the one encoding pass every task uses (:mod:`.cached`:
check the store's settings, skip what is done, encode the rest, read the rows back) over the one engine choice,
``engine: local`` (:mod:`.local`: this process and its decoding workers) or ``engine: ray`` (:mod:`.ray_engine`).
The pass writes into a :class:`~.store.RowStore`: a task's result parts, or (:mod:`.feature_fill`) a feature cache."""

from .cached import Encoded, Encoder, Engine, ScorerFactory, check_engine, encode, encode_files, encode_locked, \
    failure, keyed_store, loaded, stored_rows

__all__ = ["Encoded", "Encoder", "Engine", "ScorerFactory", "check_engine", "encode", "encode_files", "encode_locked",
           "failure", "keyed_store", "loaded", "stored_rows"]
