"""The thesis's figures as PNG files: Figs. 4.7, 4.8 (t-SNE), 4.10 (embedding magnitudes), 4.11 (distance matrices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tsne(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(
        n_components=2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), random_state=seed, init="pca"
    ).fit_transform(x)


def draw_all(folder: Path, model, tracks, pseudo, stacks, matrices, n_tracks: int = 10) -> list[str]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    parts = model.parts
    written = []

    # Fig. 4.7: t-SNE of each subspace, 5-s segments of n_tracks dataset pieces, coloured by track
    seg = 5 * 44100
    chosen = tracks[:n_tracks]
    mix, labels = [], []
    for i, t in enumerate(chosen):
        k = t.stems.shape[1] // seg
        mix.append(t.mix[: k * seg].reshape(k, seg))
        labels += [i] * k
    if mix:
        emb = model.embed(np.concatenate(mix))
        fig, axes = plt.subplots(1, len(parts), figsize=(4 * len(parts), 4))
        for j, (ax, part) in enumerate(zip(axes, parts)):
            xy = _tsne(emb[:, j])
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=14)
            ax.set_title(f"{part} subspace")
            ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(sc, ax=axes, label="track")
        fig.suptitle("Fig. 4.7: dataset pieces, coloured by track")
        written.append(_save(fig, folder / "fig4_7_tsne_by_track.png"))

    # Fig. 4.8: t-SNE of test pseudo pieces, coloured by part-level label
    if pseudo:
        fig, axes = plt.subplots(1, len(pseudo), figsize=(4 * len(pseudo), 4))
        for ax, (part, (x, lab, _)) in zip(np.atleast_1d(axes), pseudo.items()):
            xy = _tsne(x)
            _, codes = np.unique(lab, return_inverse=True)
            ax.scatter(xy[:, 0], xy[:, 1], c=codes, cmap="tab10", s=10)
            ax.set_title(f"{part}: by {part} label")
            ax.set_xticks([]), ax.set_yticks([])
        fig.suptitle("Fig. 4.8: test pseudo pieces, coloured by part-level label")
        written.append(_save(fig, folder / "fig4_8_tsne_pseudo_by_label.png"))

    # Fig. 4.10: |embedding| for isolated stems, stacked
    if stacks:
        fig, axes = plt.subplots(len(stacks), 1, figsize=(10, 2.2 * len(stacks)), sharex=True)
        for ax, (part, e) in zip(np.atleast_1d(axes), stacks.items()):
            ax.imshow(np.abs(e), aspect="auto", cmap="viridis", interpolation="nearest")
            ax.set_ylabel(f"{part}\nsegments")
            for b in range(1, len(parts)):
                ax.axvline(b * model.subspace_dim - 0.5, color="w", lw=0.5)
        np.atleast_1d(axes)[-1].set_xlabel("embedding dimension (" + ", ".join(parts) + ")")
        fig.suptitle("Fig. 4.10: absolute embedding values, isolated stems in")
        written.append(_save(fig, folder / "fig4_10_isolated_stem_embeddings.png"))

    # Fig. 4.11: distance matrices, stem in vs mix in (first part with data)
    if matrices:
        part, (d_stem, d_mix) = next(iter(matrices.items()))
        n = min(len(d_stem), 40)
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        for ax, d, title in zip(
            axes, (d_stem, d_mix), (f"{part} subspace, {part} stem in", f"{part} subspace, mix in")
        ):
            im = ax.imshow(d[:n, :n], cmap="magma")
            ax.set_title(title)
            fig.colorbar(im, ax=ax)
        fig.suptitle("Fig. 4.11: distance matrices between test segments")
        written.append(_save(fig, folder / "fig4_11_distance_matrices.png"))
    return written


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)
