"""The part-embedding model's commands: ``train``, ``evaluate``, ``export``, ``bench-embed``, ``interpolate``,
``bench-train``, ``embed``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InvalidArgument
from .args import integer, number, widths


def register(sub) -> None:
    train = sub.add_parser("train", help="train the part-embedding CSN (thesis ch. 4) on a corpus")
    train.add_argument("--corpus", required=True, type=Path, help="partsim corpus or Slakh2100 folder")
    train.add_argument("--out", required=True, type=Path, help="run folder (checkpoint, run.json, model.pt); resumes")
    train.add_argument("--widths", type=widths, default=[8, 16, 32, 64, 128], help="channels of the 5 conv blocks")
    train.add_argument("--subspace-dim", type=integer, default=128)
    train.add_argument("--segment-seconds", type=number, default=3.0)
    train.add_argument("--batch", type=integer, default=16, help="triplet draws per step")
    train.add_argument("--epochs", type=integer, default=20)
    train.add_argument("--steps-per-epoch", type=integer, default=50)
    train.add_argument("--partnet-steps", type=integer, default=100, help="steps for the per-part networks")
    train.add_argument("--pretrain-steps", type=integer, default=100, help="steps of pre-training (eq. 4.7)")
    train.add_argument("--lr", type=number, default=1e-3)
    train.add_argument("--no-pseudo", action="store_true", help="ablation: dataset-piece triplets (Fig. 4.2)")
    train.add_argument("--no-additional", action="store_true", help="ablation: basic triplets only")
    train.add_argument("--no-norm", action="store_true", help="ablation: no norm loss")
    train.add_argument("--no-pretrain", action="store_true", help="ablation: random initialisation")
    train.add_argument("--seed", type=integer, default=0)
    train.add_argument("--threads", type=integer, default=0, help="torch threads (0: default)")
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    train.add_argument(
        "--time-limit",
        type=number,
        default=0.0,
        metavar="MINUTES",
        help="stop the main phase after this many minutes of training (0: none)",
    )
    train.add_argument("--load-workers", type=integer, default=0, help="threads decoding stems (0: one per core)")
    train.add_argument("--val-draws", type=integer, default=96, help="validation triplets measured after each epoch")
    train.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch remains)")
    train.add_argument(
        "--init",
        default="",
        metavar="MODEL",
        help="start the main phase from a model.pt or a shipped model folder (skips pre-training)",
    )
    train.add_argument("--no-augment", action="store_true", help="no per-stem augmentation before mixing")
    train.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast where the device computes in bf16",
    )
    train.add_argument("--no-channels-last", action="store_true", help="keep NCHW tensors")
    train.add_argument("--compile", action="store_true", help="torch.compile the CSN's training forward")
    train.add_argument(
        "--features",
        choices=["torch", "numpy"],
        default="torch",
        help="log-mel on the training device (torch) or with NumPy on the CPU",
    )
    train.add_argument(
        "--schedule", choices=["constant", "cosine"], default="constant", help="learning rate over the main phase"
    )
    train.add_argument(
        "--freeze-bn",
        action="store_true",
        help="batch norms keep their running statistics (fine-tuning with small batches)",
    )
    train.set_defaults(handler=_cmd_train, needs="train")

    ev = sub.add_parser("evaluate", help="the thesis's evaluation protocols on a corpus's test split (or several sets)")
    ev.add_argument(
        "model",
        type=Path,
        help="model.pt (PyTorch, with the baseline), manifest.json (ONNX) or "
        "baseline:logspec (the untrained log-spectrum baseline)",
    )
    ev.add_argument("--corpus", type=Path, help="one corpus: its --split's tables beside the thesis's")
    ev.add_argument("--split", default=None, help="split of --corpus and of each --set without :SPLIT (default test)")
    ev.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NAME=DIR[:SPLIT]",
        help="an evaluation set (repeatable; instead of --corpus): Tables 4.1-4.3 with one row per set; "
        "names test, composer, synth, both read 'test split', 'held-out composer', "
        "'held-out SoundFont', 'both'",
    )
    ev.add_argument(
        "--baseline",
        action="store_true",
        help="also evaluate the untrained log-spectrum baseline on every set (rows 'baseline, ...')",
    )
    ev.add_argument("--out", type=Path, help="write the results as JSON")
    ev.add_argument("--figures", type=Path, help="draw the thesis's figures into this folder")
    ev.add_argument("--quick", action="store_true", help="only Tables 4.2 and 4.3")
    ev.set_defaults(handler=_cmd_evaluate, needs="train,cpu")

    ex = sub.add_parser("export", help="export a trained model to ONNX with its manifest")
    ex.add_argument(
        "model",
        type=Path,
        help="model.pt written by partsim train, or a mel-input model's "
        "manifest.json (csn-v2): the same graph with the feature front end in front of it",
    )
    ex.add_argument("--out", required=True, type=Path, help="folder for csn.onnx and manifest.json")
    ex.add_argument("--evaluation", type=Path, help="evaluation JSON to record in the manifest")
    ex.add_argument("--name", default="csn")
    ex.add_argument(
        "--input",
        choices=["pcm", "mel"],
        default="pcm",
        help="what the graph takes: pcm (float32 (batch, samples) at 44.1 kHz, the log-mel "
        "features inside the graph; default) or mel (the NumPy features, as csn-v1/v2)",
    )
    ex.add_argument(
        "--radix", type=integer, default=32, help="the in-graph STFT's split (1: the plain DFT convolution; default 32)"
    )
    ex.set_defaults(handler=_cmd_export, needs="train,cpu")

    be = sub.add_parser("bench-embed", help="embedding throughput: PyTorch eager vs onnxruntime, same inputs")
    be.add_argument("model", type=Path, help="model.pt")
    be.add_argument("manifest", type=Path, help="the same model exported (manifest.json)")
    be.add_argument("--segments", type=integer, default=64)
    be.set_defaults(handler=_cmd_bench_embed, needs="train,cpu")

    ip = sub.add_parser("interpolate", help="weight-space ensemble of a fine-tuned run and its --init model")
    ip.add_argument("model", type=Path, help="model.pt or checkpoint.pt of a run trained with --init and --freeze-bn")
    ip.add_argument("--init", required=True, type=Path, help="the shipped model folder the run started from")
    ip.add_argument("--alpha", type=number, required=True, help="0: the init model, 1: the fine-tuned one")
    ip.add_argument("--out", required=True, type=Path, help="model.pt to write")
    ip.set_defaults(handler=_cmd_interpolate, needs="train")

    bt = sub.add_parser("bench-train", help="training draws/s: csn-v2's configuration vs csn-v3's, one run")
    bt.add_argument("--corpus", required=True, type=Path, help="partsim corpus or Slakh2100 folder")
    bt.add_argument("--widths", type=widths, default=[16, 32, 64, 128, 256])
    bt.add_argument("--batch", type=integer, default=32)
    bt.add_argument("--steps", type=integer, default=4, help="timed steps per configuration (after one warm-up)")
    bt.add_argument("--device", default="auto")
    bt.add_argument("--compile", action="store_true", help="csn-v3 configuration with torch.compile")
    bt.add_argument("--out", type=Path, help="write the results as JSON")
    bt.set_defaults(handler=_cmd_bench_train, needs="train")

    emb = sub.add_parser("embed", help="per-segment per-part vectors of audio files, as .npz")
    emb.add_argument("audio", nargs="+", type=Path)
    emb.add_argument("--model", type=Path, help="model manifest (default: the shipped model)")
    emb.add_argument("--segment-seconds", type=number)
    emb.add_argument("--hop-seconds", type=number)
    emb.add_argument("-o", "--out", required=True, type=Path)
    emb.set_defaults(handler=_cmd_embed, needs="embedder,cpu")


def _cmd_train(args: argparse.Namespace) -> int:
    from ..model.nets import NetConfig
    from ..model.train import TrainConfig, Trainer

    cfg = TrainConfig(
        corpus=str(args.corpus),
        out=str(args.out),
        net=NetConfig(subspace_dim=args.subspace_dim, widths=args.widths),
        segment_seconds=args.segment_seconds,
        batch=args.batch,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        partnet_steps=args.partnet_steps,
        pretrain_steps=args.pretrain_steps,
        lr=args.lr,
        pseudo=not args.no_pseudo,
        additional=not args.no_additional,
        norm=not args.no_norm,
        pretrain=not args.no_pretrain,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        time_limit=args.time_limit,
        load_workers=args.load_workers,
        val_draws=args.val_draws,
        init=args.init,
        augment=not args.no_augment,
        precision=args.precision,
        channels_last=not args.no_channels_last,
        compile=args.compile,
        features=args.features,
        schedule=args.schedule,
        freeze_bn=args.freeze_bn,
    )
    cfg.validate()
    trainer = Trainer(cfg, progress=not args.quiet)
    if trainer.resume():
        print(f"resuming {args.out} at {trainer.state['phase']} epoch {trainer.state['epoch']}", file=sys.stderr)
    log = trainer.run()
    print(f"trained in {log['wall_seconds']:.0f} s; model: {args.out / 'model.pt'}; log: {args.out / 'run.json'}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..model import evaluate as ev
    from ..model.baseline import LogSpectrumBaseline, is_baseline, load_model

    if (args.corpus is None) == (not args.sets):
        raise InvalidArgument(
            "give either --corpus DIR (one corpus) or --set NAME=DIR[:SPLIT] (one or more sets)"
            + (", not both" if args.sets else "")
        )
    split = args.split or "test"
    if args.corpus is not None and not args.baseline:  # one corpus, as before sets existed
        results = ev.evaluate(load_model(args.model), args.corpus, split, args.figures, args.quick)
        print(ev.format_tables(results))
    else:
        sets = ev.resolve_sets(args.sets or [ev.EvalSet(split, args.corpus, split)], split)
        model = load_model(args.model)
        baseline = None
        if args.baseline and not is_baseline(args.model):
            baseline = LogSpectrumBaseline(model.subspace_dim, model.parts, model.features.cfg)
        results = ev.evaluate_sets(
            model,
            sets,
            str(args.model),
            baseline,
            args.figures,
            args.quick,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        print(ev.format_sets(results))
    if args.out:
        ev.save_results(results, args.out)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..model.export import add_frontend, export

    if args.model.suffix == ".json":
        if args.input != "pcm" or args.evaluation is not None:
            raise InvalidArgument("a manifest is only converted to PCM input (no --input mel, no --evaluation)")
        manifest = add_frontend(args.model, args.out, args.radix)
    else:
        manifest = export(args.model, args.out, args.evaluation, args.name, input=args.input, radix=args.radix)
    print(
        f"wrote {args.out / manifest['onnx']['file']} and {args.out / 'manifest.json'} "
        f"(model version {manifest['model_version']}, input {manifest['onnx']['input']})"
    )
    return 0


def _cmd_bench_embed(args: argparse.Namespace) -> int:
    from ..model.bench import run_bench

    run_bench(str(args.model), str(args.manifest), segments=args.segments)
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from ..model.warmstart import interpolate

    if not args.model.is_file():
        raise InvalidArgument(f"{args.model}: no such model file")
    manifest = args.init / "manifest.json" if args.init.is_dir() else args.init
    if not manifest.is_file():
        raise InvalidArgument(f"--init {args.init}: no manifest.json there")
    interpolate(args.model, manifest, args.alpha, args.out)
    print(f"wrote {args.out} (alpha {args.alpha})")
    return 0


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from ..model.train_bench import bench_training

    if not args.corpus.is_dir():
        raise InvalidArgument(f"--corpus {args.corpus}: no such folder")
    for name in ("batch", "steps"):
        if getattr(args, name) < 1:
            raise InvalidArgument(f"--{name} must be at least 1, got {getattr(args, name)}")
    results = bench_training(
        str(args.corpus),
        widths=args.widths,
        batch=args.batch,
        steps=args.steps,
        device=args.device,
        compile=args.compile,
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from ..assets import default_manifest
    from ..model.embed import embed_files, write_npz
    from ..model.inference import OnnxEmbedder

    embedder = OnnxEmbedder(args.model or default_manifest())
    arrays = embed_files(embedder, args.audio, args.segment_seconds, args.hop_seconds)
    write_npz(arrays, args.out)
    n, p, d = arrays["vectors"].shape
    print(f"wrote {args.out}: {n} segments x {p} parts x {d} dims from {len(args.audio)} file(s)")
    return 0
