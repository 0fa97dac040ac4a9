"""`faceflow import mxnet|torch|onnx ... OUT_CHECKPOINT --network NAME`: a published model as a faceflow checkpoint."""
from __future__ import annotations

import argparse

from faceflow.export.parity import MIN_COSINE, bin_faces, drawn_faces
from faceflow.models.registry import list_models


def _add_common(parser: argparse.ArgumentParser, parity: bool, size_from: str) -> None:
    parser.add_argument("out", metavar="OUT_CHECKPOINT", help="checkpoint directory to write (e.g. …/step_000000)")
    parser.add_argument("--as-run", action="store_true",
                        help="OUT is a run directory: write OUT/checkpoints/step_000000 and the manifest OUT/train.json, "
                        "so validation, export and the report treat the model as a finished run")
    parser.add_argument("--network", required=True, help=f"faceflow backbone: {' '.join(list_models())}")
    parser.add_argument("--embedding-size", type=int, default=None, help=f"embedding size (default: read from {size_from})")
    if parity:
        parser.add_argument("--images", metavar="BIN", help="verification .bin for the parity check (default: drawn faces)")
        parser.add_argument("--parity-images", type=int, default=4, metavar="N", help="parity batch size (default 4)")


def build_parser() -> argparse.ArgumentParser:
    """The `faceflow import` parser (source formats: mxnet, torch, onnx)."""
    parser = argparse.ArgumentParser(prog="faceflow import", description=__doc__)
    sub = parser.add_subparsers(dest="format", required=True)
    mxnet = sub.add_parser("mxnet", help="InsightFace MXNet checkpoint (fresnet IR, fc_type E; MobileFaceNet)",
                           description="Import PREFIX-symbol.json + PREFIX-EPOCH.params; the embeddings are "
                           f"checked against MXNet's (min cosine >= {MIN_COSINE}) before the checkpoint is written.")
    mxnet.add_argument("prefix", metavar="PREFIX")
    mxnet.add_argument("epoch", type=int, metavar="EPOCH")
    _add_common(mxnet, True, "pre_fc1_weight")
    torch = sub.add_parser("torch", help="arcface_torch backbone state dict (backbone.pth / model.pt)",
                           description="Import an arcface_torch IResNet or MobileFaceNet state dict saved with "
                           "torch.save (zip or legacy format), read without PyTorch: only tensor data is "
                           "unpickled, a file asking for anything else is refused.")
    torch.add_argument("pth", metavar="BACKBONE.pth")
    _add_common(torch, False, "fc.weight / features.layers.2.weight")
    onnx = sub.add_parser("onnx", help="ONNX recognition model (InsightFace model zoo, arcface_torch torch2onnx)",
                          description="Import an ONNX recognition graph, weights matched to layers by graph "
                          f"structure; the embeddings are checked against onnxruntime's on the file "
                          f"(min cosine >= {MIN_COSINE}) before the checkpoint is written.")
    onnx.add_argument("model", metavar="MODEL.onnx")
    _add_common(onnx, True, "the last Gemm/MatMul")
    return parser


def main(argv: list[str]) -> int:
    """Run `faceflow import mxnet|torch|onnx ...`."""
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from faceflow.checkpoint import step_dir_name, write_manifest
    from faceflow.errors import FaceflowError

    checkpoint = Path(args.out) / "checkpoints" / step_dir_name(0) if args.as_run else Path(args.out)
    if args.format == "torch":
        from faceflow.export.torch_import import import_torch_checkpoint

        config = import_torch_checkpoint(args.pth, args.network, checkpoint, args.embedding_size)
        extra = f" {config['network_kwargs']}" if config.get("network_kwargs") else ""
        line = f"imported {args.pth} as {args.network}{extra}, embedding_size {config['embedding_size']}"
    else:
        if args.parity_images < 1:
            raise FaceflowError(f"--parity-images: must be >= 1, got {args.parity_images}")
        images = bin_faces(args.images, args.parity_images) if args.images else drawn_faces(args.parity_images)
        if args.format == "onnx":
            from faceflow.export.onnx_import import import_onnx_checkpoint

            parity = import_onnx_checkpoint(args.model, args.network, checkpoint, images, args.embedding_size)
            source = args.model
        else:
            from faceflow.export.mxnet_import import import_mxnet_checkpoint

            parity = import_mxnet_checkpoint(args.prefix, args.epoch, args.network, checkpoint, images,
                                             args.embedding_size)
            source = f"{args.prefix}-{args.epoch:04d}.params"
        line = (f"imported {source} as {args.network}; max_abs_diff {parity.max_abs_diff:.3g}, "
                f"min_cosine {parity.min_cosine:.10f} on {parity.images} images")
    if args.as_run:
        write_manifest(args.out, 0)
    print(f"{checkpoint}: {line}")
    return 0
