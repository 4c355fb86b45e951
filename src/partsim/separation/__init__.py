"""Source separation: a small demucs model trained on partsim corpora.

The model is one of demucs's own classes (:class:`demucs.htdemucs.HTDemucs` by default), so a
trained model is stored and loaded exactly like demucs's pre-trained ones: a repository folder
holding ``<sig>-<sha256[:8]>.th`` packages and a bag ``<name>.yaml`` naming them, loaded with
``demucs.pretrained.get_model(name, repo=folder)``.

Modules:

* :mod:`partsim.separation.train`: random-window training with remix augmentation, L1 loss,
  per-epoch validation SDR, checkpoint/resume, ``run.json``.
* :mod:`partsim.separation.repo`: export a run's best model into a repository folder; load it
  back with checksum verification (:func:`load_separator`).
* :mod:`partsim.separation.evaluate`: SDR/SIR/SAR per part on a corpus's test split
  (Table 3.1 protocol), beside the thesis's Spleeter numbers.

Shapes follow demucs: a mix is ``(batch, audio_channels=1, samples)``, separated sources are
``(batch, sources=5, audio_channels=1, samples)``, at 44.1 kHz.
"""

from partsim.data.taxonomy import PARTS

SOURCES = list(PARTS)  # model output order (the data's parts)

from .repo import export_run, load_separator, shipped_repo  # noqa: E402

__all__ = ["SOURCES", "export_run", "load_separator", "shipped_repo"]
