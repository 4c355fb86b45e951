"""The GPU bundle's plumbing (used by scripts/gpu-bundle.sh, gpu-assemble.sh and gpu-train.sh).

A lent GPU machine has no FluidSynth, mma, SoundFonts or network, and one device call carries at
most 64 MiB (the working tree plus the carried git-ignored paths). So gpu-bundle.sh packs
everything into one ``bundle.tar`` and cuts it into parts that each fit one call beside the
working tree; gpu-assemble.sh gathers the parts there (one or more per call, kept in a stash
folder while the machine stays warm), checks each part's and the whole's SHA-256, unpacks it and
decodes the SoundFonts. Standard library only, except ``decode``/``encode`` (NumPy).

SoundFonts (.sf2) are mostly 16-bit PCM, which xz alone shrinks little (FluidR3_GM: 86 %).
``encode`` stores a file as the second difference of its 16-bit words (wrapping arithmetic, so
any bytes round-trip exactly), low bytes then high bytes, xz-compressed: about 60 % of FluidR3_GM
and 47 % of OPL-3_FM_128M. ``decode`` is two cumulative sums; the bundle's manifest holds every
decoded file's SHA-256, and assembly checks it.

    python3 scripts/gpu_bundle.py encode SRC DST | decode SRC DST
    python3 scripts/gpu_bundle.py tree-bytes                      what a device call sends now
    python3 scripts/gpu_bundle.py split BUNDLE.tar DIR PART_BYTES     DIR/part-NN + DIR/SHA256SUMS
    python3 scripts/gpu_bundle.py assemble --parts DIR --stash DIR --dest DIR [--require]
    python3 scripts/gpu_bundle.py corpus-ref CORPUS OUT.json | corpus-compare CORPUS REF.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

MAGIC = b"PSPCM2\0\0"  # then the decoded length (u64 LE), then one xz stream
SUFFIX = ".pcm2.xz"
SUMS = "SHA256SUMS"
WHOLE = "bundle.tar"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------
# SoundFont codec


def encode_bytes(raw: bytes, preset: int = 6) -> bytes:
    import numpy as np

    n = len(raw) // 2
    x = np.frombuffer(raw, "<i2", count=n)
    d = x.copy()
    for _ in range(2):  # second difference, modulo 2**16
        d[1:] = d[1:] - d[:-1]
    b = d.view(np.uint8)
    payload = b[0::2].tobytes() + b[1::2].tobytes() + raw[2 * n :]
    return MAGIC + struct.pack("<Q", len(raw)) + lzma.compress(payload, preset=preset)


def decode_bytes(blob: bytes) -> bytes:
    import numpy as np

    if blob[:8] != MAGIC:
        raise ValueError("not a partsim PCM2 stream")
    (length,) = struct.unpack("<Q", blob[8:16])
    payload = lzma.decompress(blob[16:])
    if len(payload) != length:
        raise ValueError(f"PCM2 stream: {len(payload)} bytes decoded, {length} expected")
    n = length // 2
    b = np.empty(2 * n, np.uint8)
    b[0::2] = np.frombuffer(payload, np.uint8, count=n)
    b[1::2] = np.frombuffer(payload, np.uint8, count=n, offset=n)
    x = b.view("<i2")
    for _ in range(2):
        x = np.cumsum(x, dtype=np.int16)  # wraps like the encoder's differences
    return x.astype("<i2", copy=False).tobytes() + payload[2 * n :]


def encode(src: Path, dst: Path) -> None:
    dst.write_bytes(encode_bytes(Path(src).read_bytes()))


def decode(src: Path, dst: Path) -> None:
    tmp = Path(f"{dst}.tmp")
    tmp.write_bytes(decode_bytes(Path(src).read_bytes()))
    os.replace(tmp, dst)


# ------------------------------------------------------------------------------------------
# Sizes and parts


def tree_bytes(repo: Path) -> int:
    """Bytes a device call sends besides its carried paths: tracked and untracked-not-ignored files
    (as they are now in the working tree) and shared/."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    paths = {p for p in out.decode().split("\0") if p}
    total = 0
    for p in paths:
        try:
            total += os.lstat(repo / p).st_size
        except FileNotFoundError:  # deleted in the working tree
            pass
    shared = repo / "shared"
    if shared.is_dir():
        total += sum(
            os.lstat(f).st_size for f in shared.rglob("*") if not f.is_dir() and str(f.relative_to(repo)) not in paths
        )
    return total


def split(bundle: Path, outdir: Path, part_bytes: int) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("part-*"):
        old.unlink()
    parts: list[Path] = []
    with open(bundle, "rb") as f:
        while block := f.read(part_bytes):
            parts.append(outdir / f"part-{len(parts):02d}")
            parts[-1].write_bytes(block)
    lines = [f"{sha256(p)}  {p.name}" for p in parts] + [f"{sha256(bundle)}  {WHOLE}"]
    (outdir / SUMS).write_text("\n".join(lines) + "\n")
    return parts


def read_sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    if WHOLE not in sums or not any(n.startswith("part-") for n in sums):
        raise SystemExit(f"{path}: not a bundle checksum list")
    return sums


# ------------------------------------------------------------------------------------------
# Assembly (on the GPU machine)


def assemble(parts_dir: Path, stash: Path, dest: Path, require: bool) -> int:
    stash.mkdir(parents=True, exist_ok=True)
    sums_file = parts_dir / SUMS if (parts_dir / SUMS).is_file() else stash / SUMS
    if not sums_file.is_file():
        print(
            f"gpu-assemble: no {SUMS} in {parts_dir} or {stash}: carry .devbundle/{SUMS} with every part",
            file=sys.stderr,
        )
        return 2
    sums = read_sums(sums_file)
    if sums_file.parent != stash:
        old = stash / SUMS
        if old.is_file() and read_sums(old)[WHOLE] != sums[WHOLE]:  # another bundle: start over
            shutil.rmtree(stash)
            stash.mkdir(parents=True)
        shutil.copyfile(sums_file, stash / SUMS)
    ready = dest / "READY"
    if ready.is_file() and ready.read_text().strip() == sums[WHOLE]:
        print(f"gpu-assemble: {dest} already holds bundle {sums[WHOLE][:12]}")
        return 0
    names = sorted(n for n in sums if n.startswith("part-"))
    have, bad = [], []
    for name in names:
        kept = stash / name
        if kept.is_file() and kept.stat().st_size and sha256(kept) == sums[name]:
            have.append(name)
            continue
        new = parts_dir / name
        if new.is_file():
            if sha256(new) != sums[name]:
                bad.append(name)
                continue
            shutil.copyfile(new, kept)
            have.append(name)
    missing = [n for n in names if n not in have]
    print(
        f"gpu-assemble: bundle {sums[WHOLE][:12]}: {len(have)}/{len(names)} parts here "
        f"({' '.join(have) or 'none'})" + (f"; missing {' '.join(missing)}" if missing else "")
    )
    if bad:
        print(f"gpu-assemble: SHA-256 mismatch, not kept: {' '.join(bad)} (re-send them)", file=sys.stderr)
    if missing:
        return 3 if require or bad else 0
    whole = stash / WHOLE
    with open(whole, "wb") as out:
        for name in names:
            with open(stash / name, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    if sha256(whole) != sums[WHOLE]:
        print(f"gpu-assemble: the joined {WHOLE} does not match its SHA-256", file=sys.stderr)
        return 4
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _extract(whole, dest)
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    _extract(dest / "base.tar.xz", dest)
    (dest / "base.tar.xz").unlink()
    for name, digest in manifest["files"].items():
        path = dest / name
        coded = Path(f"{path}{SUFFIX}")
        if coded.is_file():
            decode(coded, path)
            coded.unlink()
        if not path.is_file() or sha256(path) != digest:
            print(f"gpu-assemble: {name} is missing or does not match its SHA-256", file=sys.stderr)
            return 4
    whole.unlink()
    ready.write_text(sums[WHOLE] + "\n")
    print(
        f"gpu-assemble: unpacked into {dest}: {len(manifest['files'])} files checked "
        f"({', '.join(sorted(Path(n).name for n in manifest['files'] if n.startswith('sf/')))})"
    )
    return 0


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


# ------------------------------------------------------------------------------------------
# The reference corpus (what the CPU run rendered with the same settings)

COMPARED_CONFIG = (
    "generator",
    "seed",
    "seconds",
    "sample_rate",
    "soundfonts",
    "composer",
    "grooves",
    "mma_composer",
    "mma_version",
    "split",
    "soundfont_sha256",
)


def corpus_ref(corpus: Path, out: Path) -> None:
    index = json.loads((corpus / "index.json").read_text())
    songs = sorted(index["songs"])
    ref = {
        "config": index["config"],
        "splits": index["splits"],
        "song_mid": {s: sha256(corpus / s / "song.mid") for s in songs},
        "mix_flac": {s: sha256(corpus / s / "mix.flac") for s in songs},
    }
    out.write_text(json.dumps(ref, indent=0) + "\n")


def corpus_compare(corpus: Path, ref_path: Path, ref_corpus: Path | None = None) -> int:
    """Print how the rendered corpus compares with the reference; 1 if the compositions differ.

    The MIDI of a seed never varies; a mix can differ in a few samples, ~60 dB down, where its render
    process had rendered other songs first (partsim/corpus/render.py), so with another --workers a
    share of the mixes differ in bytes. With ``ref_corpus`` (the reference corpus itself, where it is
    at hand) up to 8 differing mixes are decoded and their difference level is printed."""
    index = json.loads((corpus / "index.json").read_text())
    ref = json.loads(ref_path.read_text())
    diff = [k for k in COMPARED_CONFIG if index["config"].get(k) != ref["config"].get(k)]
    if diff:
        print(f"corpus vs reference: not comparable (settings differ: {', '.join(diff)})")
        return 0
    songs = [s for s in sorted(index["songs"]) if s in ref["song_mid"]]
    same_mid = sum(sha256(corpus / s / "song.mid") == ref["song_mid"][s] for s in songs)
    same_mix = sum(sha256(corpus / s / "mix.flac") == ref["mix_flac"][s] for s in songs)
    print(
        f"corpus vs reference ({ref['config'].get('songs')} songs rendered on the CPU): {len(songs)} songs "
        f"compared; song.mid identical {same_mid}/{len(songs)}, mix.flac identical {same_mix}/{len(songs)} "
        "(mixes may differ ~60 dB down: FluidSynth's per-process sample caches)"
    )
    if ref_corpus is not None:
        import numpy as np
        import soundfile as sf

        differing = [s for s in songs if sha256(corpus / s / "mix.flac") != ref["mix_flac"][s]][:8]
        for s in differing:
            a, _ = sf.read(corpus / s / "mix.flac", dtype="float64")
            b, _ = sf.read(ref_corpus / s / "mix.flac", dtype="float64")
            level = 10 * np.log10(max(np.mean((a - b) ** 2), 1e-30) / max(np.mean(b**2), 1e-30))
            print(f"  {s}: difference at {level:.1f} dB relative to the mix, largest sample {np.abs(a - b).max():.2e}")
    if same_mid != len(songs):
        print("corpus vs reference: WARNING: compositions differ from the CPU corpus", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("encode", "decode"):
        p = sub.add_parser(name)
        p.add_argument("src", type=Path)
        p.add_argument("dst", type=Path)
    sub.add_parser("tree-bytes")
    p = sub.add_parser("split")
    p.add_argument("bundle", type=Path)
    p.add_argument("outdir", type=Path)
    p.add_argument("part_bytes", type=int)
    p = sub.add_parser("assemble")
    p.add_argument("--parts", type=Path, required=True)
    p.add_argument("--stash", type=Path, required=True)
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--require", action="store_true", help="missing parts are an error (exit 3)")
    p = sub.add_parser("corpus-ref")
    p.add_argument("corpus", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("corpus-compare")
    p.add_argument("corpus", type=Path)
    p.add_argument("ref", type=Path)
    p.add_argument("--ref-corpus", type=Path, help="the reference corpus: print how much differing mixes differ")
    a = ap.parse_args(argv)
    if a.cmd == "encode":
        encode(a.src, a.dst)
    elif a.cmd == "decode":
        decode(a.src, a.dst)
    elif a.cmd == "tree-bytes":
        print(tree_bytes(Path(__file__).resolve().parents[1]))
    elif a.cmd == "split":
        for p in split(a.bundle, a.outdir, a.part_bytes):
            print(p)
    elif a.cmd == "assemble":
        return assemble(a.parts, a.stash, a.dest, a.require)
    elif a.cmd == "corpus-ref":
        corpus_ref(a.corpus, a.out)
    elif a.cmd == "corpus-compare":
        return corpus_compare(a.corpus, a.ref, a.ref_corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
