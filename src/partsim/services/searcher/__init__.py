"""The searcher service: the only component that talks to Milvus (one collection per part).

- :mod:`.retrieval`: the retrieval function (thesis eq. 6.1 / 6.2) in NumPy, the one place for it.
- :mod:`.store`: Milvus collections, the exact and approximate search paths.
- :mod:`.mirror`: the in-memory copy of every vector (the exact path's brute force).
- :mod:`.meta`: track metadata in SQLite beside the vectors.
- :mod:`.config` / :mod:`.server`: ``PARTSIM_SEARCHER_*`` settings, the gRPC service and ``main``.
- :mod:`.bench`: latency and recall@100 of the two paths on a synthetic catalog.
"""
