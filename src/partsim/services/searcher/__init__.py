"""The searcher service: the only component that talks to Milvus (one collection per part).

- :mod:`.retrieval`: the retrieval function (thesis eq. 6.1 / 6.2) in NumPy, the one place for it.
- :mod:`.store`: :class:`SearchStore`, the index the service calls (writes, reads, the exact search path).
- :mod:`.milvus`: the Milvus connection: collection schema, vector index, every raw Milvus call.
- :mod:`.migrate`: checks an existing collection's schema, migrates one written by an older searcher.
- :mod:`.ann`: the approximate search path (Milvus's index for candidates, an exact re-rank).
- :mod:`.records`: the data types the store takes and returns (segments, hits, a stored segment).
- :mod:`.tracktable`: the track records in a Milvus collection of their own (the catalog's truth with the vectors).
- :mod:`.mirror` / :mod:`.cache`: the in-memory copy of every vector (the exact path's brute force), a bounded
  cache filled in the background and checked against Milvus before each answer.
- :mod:`.exact`: the exact path without the mirror (rows read from Milvus), and the filter of rows of no
  current version both paths use.
- :mod:`.meta`: :class:`TrackInfo`, and the SQLite file older catalogs kept it in (imported once).
- :mod:`.config` / :mod:`.server`: ``PARTSIM_SEARCHER_*`` settings, the gRPC service and ``main``.
- :mod:`.bench`: latency and recall@100 of the two paths on a synthetic catalog.
"""
