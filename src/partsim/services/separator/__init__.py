"""The separator service: audio in, the stems of a Demucs model out, streamed in bounded chunks.

Modules: :mod:`.models` (loading a Demucs model from a repository folder), :mod:`.engine` (decoding,
chunked Demucs separation, FLAC), :mod:`.server` (the gRPC servicer, admission limits, the
``SeparatorServer`` service and ``main``), :mod:`.config` (``PARTSIM_SEPARATOR_*``), :mod:`.client`
(calling Separate and reassembling the stems).
"""
