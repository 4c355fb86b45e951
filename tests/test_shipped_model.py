"""The model shipped in models/ (installed as partsim.assets): intact, loadable, the embed default."""

from __future__ import annotations

import json

import numpy as np
import pytest

from partsim import assets
from partsim.assets import default_manifest
from partsim.model.inference import OnnxEmbedder, sha256_file

from .util import run_cli


def test_shipped_manifest_matches_its_onnx_file():
    path = default_manifest()
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "partsim-model"
    assert manifest["parts"] == ["drums", "bass", "piano", "guitar", "others"] and manifest["subspace_dim"] == 128
    assert sha256_file(path.parent / manifest["onnx"]["file"]) == manifest["onnx"]["sha256"]
    assert manifest["model_version"].endswith(manifest["onnx"]["sha256"][:12])
    # the evaluation the README quotes is recorded beside the model
    evaluation = json.loads((path.parent / "evaluation.json").read_text())
    assert manifest["evaluation"] == evaluation
    # csn-v3 onwards: the four sets of `partsim evaluate --set` (test split, held-out composer,
    # held-out SoundFont, both), each with Tables 4.1-4.3, and the untrained baseline beside them
    assert evaluation["format"] == "partsim-evaluation-sets"
    assert set(evaluation["results"]) == {"test", "composer", "synth", "both"}
    for name, result in evaluation["results"].items():
        for table in (
            "table_4_1_track_id_accuracy",
            "table_4_2_part_label_accuracy",
            "table_4_3_identification_accuracy",
        ):
            assert table in result, (name, table)
        assert set(result["table_4_2_part_label_accuracy"]) == set(manifest["parts"])
        assert set(evaluation["baseline"]["results"][name]["table_4_2_part_label_accuracy"]) == set(manifest["parts"])
    assert manifest["onnx"]["input"] == "pcm"  # csn-v3 computes its features in the graph


@pytest.mark.slow
def test_partsim_embed_uses_the_shipped_model_by_default(tiny_corpus, tmp_path):
    mix = next(tiny_corpus.glob("song*/mix.flac"))
    out = tmp_path / "e.npz"
    proc = run_cli("embed", str(mix), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    z = np.load(out)
    assert z["vectors"].shape == (2, 5, 128) and np.all(np.isfinite(z["vectors"]))
    again = OnnxEmbedder(default_manifest())
    import soundfile as sf

    audio, _ = sf.read(str(mix), dtype="float32")
    np.testing.assert_allclose(again.embed(audio[None, : 3 * 44100])[0], z["vectors"][0], atol=1e-5)


@pytest.mark.slow
def test_shipped_mel_model_with_the_front_end_in_its_graph_gives_its_own_embeddings(tmp_path):
    """csn-v2 takes mel; `partsim export src/partsim/assets/models/csn-v2/manifest.json` prepends the feature front end
    to the same graph: PCM in, and the embeddings of the mel path."""
    from partsim.model.export import add_frontend

    v2 = assets.shipped_model("csn-v2") / "manifest.json"  # kept: the last mel-input model
    manifest = add_frontend(v2, tmp_path / "v2pcm")
    assert manifest["onnx"]["input"] == "pcm" and manifest["converted_from"]["model_version"].startswith("csn-v2-")
    assert manifest["model_version"] == "csn-v2-" + manifest["onnx"]["sha256"][:12]
    mel, pcm = OnnxEmbedder(v2), OnnxEmbedder(tmp_path / "v2pcm" / "manifest.json")
    rng = np.random.default_rng(0)
    t = np.arange(3 * 44100) / 44100
    chord = sum(np.sin(2 * np.pi * f * h * t) / h for f in (130.8, 164.8, 196.0) for h in range(1, 6))
    x = np.stack(
        [
            rng.uniform(-0.3, 0.3, len(t)),
            0.5 * chord / np.abs(chord).max(),
            0.3 * np.sin(2 * np.pi * 41.2 * t) * (t > 1),
        ]
    ).astype(np.float32)
    a, b = pcm.embed(x), mel.embed(x)
    assert np.abs(a - b).max() <= 1e-5, np.abs(a - b).max()
