"""`faceflow validate MODEL --bench NAME=PATH ...`: verification accuracy of a checkpoint (or .onnx file).

All benchmarks are scored in one call with one engine (`faceflow.eval.engine`): OneFlow eager on CUDA,
onnxruntime on the checkpoint's cached ONNX export on CPU. Writes one JSON object per benchmark:
`--out FILE.json` (an object for one benchmark, a list for several) and/or `--out-dir DIR` (DIR/{bench}.json
each), always atomically.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from faceflow.cli.engine_args import add_engine_arguments, gpu_lease
from faceflow.errors import FaceflowError


def parse_bench(spec: str) -> tuple[str, Path]:
    """`lfw=PATH` -> ('lfw', Path); a one-line error otherwise."""
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise FaceflowError(f"--bench {spec!r}: expected NAME=PATH (e.g. lfw=data/lfw.bin)")
    return name.strip(), Path(path.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceflow validate", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", metavar="MODEL",
                        help="checkpoint directory (…/checkpoints/step_NNNNNN) or exported .onnx file")
    parser.add_argument("--bench", action="append", required=True, metavar="NAME=PATH",
                        help="benchmark name and its .bin file or converted OFRecord directory (repeatable)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (x2 with flips)")
    add_engine_arguments(parser)
    parser.add_argument("--threads", type=int, help="CPU threads of the engine (default: the engine's own)")
    parser.add_argument("--out", type=Path, help="JSON file: an object (one benchmark) or a list")
    parser.add_argument("--out-dir", type=Path, help="directory receiving one {bench}.json per benchmark")
    return parser


def result_record(name: str, checkpoint: Path, step: int, network: str, result: Any) -> dict[str, Any]:
    """The JSON object written for one checkpoint x benchmark."""
    return {
        "benchmark": name,
        "checkpoint": str(checkpoint),
        "network": network,
        "step": step,
        "accuracy": result.accuracy,
        "accuracy_std": result.accuracy_std,
        "accuracy_highest": result.accuracy_highest,
        "threshold": result.threshold,
        "xnorm": result.xnorm,
        "val_at_far": result.val,
        "val_std": result.val_std,
        "far": result.far,
        "far_target": 1e-3,
        "pairs": result.pairs,
        "fold_accuracies": result.fold_accuracies,
        "fold_thresholds": result.fold_thresholds,
    }


def _write_json(path: Path, payload: Any) -> None:
    from faceflow.data.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def main(argv: list[str]) -> int:
    """Entry point: parse, check inputs, load the backbone, score every benchmark, write JSON."""
    args = _parser().parse_args(argv)
    benches = [parse_bench(spec) for spec in args.bench]
    names = [name for name, _ in benches]
    if len(set(names)) != len(names):
        raise FaceflowError(f"--bench: benchmark names must be unique, got {', '.join(names)}")
    if args.batch_size < 1:
        raise FaceflowError(f"--batch-size: must be positive, got {args.batch_size}")
    for name, path in benches:
        if not path.exists():
            raise FaceflowError(f"{path}: no such benchmark file or OFRecord directory (--bench {name})")

    with gpu_lease(Path(args.checkpoint), args.device, args.engine):
        _validate(args, benches, names)
    return 0


def _validate(args: argparse.Namespace, benches: list[tuple[str, Path]], names: list[str]) -> None:
    """Open the model on the chosen engine and device, score every benchmark, write the JSON records."""
    from faceflow.eval.benchmarks import validate_with
    from faceflow.eval.engine import open_embedder

    checkpoint = Path(args.checkpoint)
    embedder = open_embedder(checkpoint, args.device, args.batch_size, args.threads, args.onnx_cache, args.engine)
    results = validate_with(embedder.embed, dict(benches), embedder.step, log=print)
    records = [result_record(name, checkpoint, embedder.step, embedder.network, results[name]) for name in names]
    if args.out is not None:
        _write_json(args.out, records[0] if len(records) == 1 else records)
    if args.out_dir is not None:
        for record in records:
            _write_json(args.out_dir / f"{record['benchmark']}.json", record)
