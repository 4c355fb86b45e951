"""The embedder service: audio in, per-segment per-part vectors out, with dynamic batching.

Modules: :mod:`.batcher` (many callers, one model call per batch), :mod:`.engine` (decode,
segment, features, batcher, presence), :mod:`.server` (the gRPC servicer and ``main``),
:mod:`.config` (``PARTSIM_EMBEDDER_*``), :mod:`.bench` (throughput at several concurrencies).
"""
