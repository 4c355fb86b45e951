"""The separator service: audio in, the stems of a Demucs model out, streamed in bounded chunks.

Modules: :mod:`.engine` (model repository, decoding, chunked Demucs separation, FLAC), :mod:`.server`
(the gRPC servicer, admission limits and ``main``), :mod:`.config` (``PARTSIM_SEPARATOR_*``),
:mod:`.client` (calling Separate and reassembling the stems).
"""
