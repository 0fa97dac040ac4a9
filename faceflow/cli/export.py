"""`faceflow export onnx|mxnet|bundle`: deployable models from a checkpoint, each checked against OneFlow."""
from __future__ import annotations

import argparse
import json

import numpy as np

from faceflow.export.parity import MIN_COSINE, Parity, bin_faces, drawn_faces

ONNX_NOTE = ("ONNX model: input 'data' N x 3 x 112 x 112 float32 RGB with a dynamic batch, output 'fc1' (the "
             "embedding), fp32. Normalisation is NOT in the graph: feed (x - 127.5) / 127.5, as InsightFace's "
             "model_zoo does for graphs that do not start with Sub/Mul.")
MXNET_NOTE = ("MXNet model: PREFIX-symbol.json + PREFIX-0000.params in InsightFace naming, output fc1_output; "
              "input raw 0..255 RGB (normalised inside, like InsightFace's symbols).")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="faceflow checkpoint directory (…/checkpoints/step_NNNNNN)")
    parser.add_argument("--images", metavar="BIN", help="verification .bin whose first images are used for "
                        "the parity check (default: JPEG-encoded drawn faces)")
    parser.add_argument("--parity-images", type=int, default=8, metavar="N",
                        help=f"images in the parity batch (default 8); min cosine must be >= {MIN_COSINE}")


def build_parser() -> argparse.ArgumentParser:
    """The `faceflow export` parser with its onnx, mxnet and bundle sub-commands."""
    parser = argparse.ArgumentParser(prog="faceflow export", description=__doc__,
                                     epilog=f"{ONNX_NOTE} {MXNET_NOTE}")
    sub = parser.add_subparsers(dest="format", required=True)
    onnx_parser = sub.add_parser("onnx", help="ONNX model through oneflow-onnx", description=ONNX_NOTE)
    _add_common(onnx_parser)
    onnx_parser.add_argument("out", metavar="OUT.onnx")
    onnx_parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 11)")
    mxnet_parser = sub.add_parser("mxnet", help="InsightFace MXNet checkpoint", description=MXNET_NOTE)
    _add_common(mxnet_parser)
    mxnet_parser.add_argument("prefix", metavar="PREFIX")
    bundle_parser = sub.add_parser("bundle", help="EXPORT_DIR with model.onnx, mxnet/, export.json",
                                   description=f"{ONNX_NOTE} {MXNET_NOTE}")
    _add_common(bundle_parser)
    bundle_parser.add_argument("export_dir", metavar="EXPORT_DIR")
    bundle_parser.add_argument("--formats", default="onnx,mxnet", help="comma-separated: onnx,mxnet (default both)")
    bundle_parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 11)")
    return parser


def parity_images(args: argparse.Namespace) -> np.ndarray:
    """The uint8 RGB images the parity check runs on."""
    from faceflow.errors import FaceflowError

    if args.parity_images < 1:
        raise FaceflowError(f"--parity-images: must be >= 1, got {args.parity_images}")
    return bin_faces(args.images, args.parity_images) if args.images else drawn_faces(args.parity_images)


def describe(what: str, parity: Parity) -> str:
    """One result line: path, max abs diff, min cosine, image count."""
    return (f"{what}: max_abs_diff {parity.max_abs_diff:.3g}, min_cosine {parity.min_cosine:.10f} "
            f"on {parity.images} images (OneFlow reference)")


def main(argv: list[str]) -> int:
    """Run `faceflow export ...`."""
    args = build_parser().parse_args(argv)
    from faceflow.checkpoint import load_backbone
    from faceflow.export.onnx_export import DEFAULT_OPSET

    images = parity_images(args)
    opset = getattr(args, "opset", None) or DEFAULT_OPSET
    if args.format == "bundle":
        from faceflow.export.bundle import export_bundle, parse_formats

        record = export_bundle(args.checkpoint, args.export_dir, parse_formats(args.formats), images, opset)
        for name, result in record["formats"].items():
            print(f"{args.export_dir}/{result['path']} ({name}): max_abs_diff {result['max_abs_diff']:.3g}, "
                  f"min_cosine {result['min_cosine']:.10f} on {result['images']} images")
        print(json.dumps({"export_json": f"{args.export_dir}/export.json", "step": record["step"]}))
        return 0
    model, _, _ = load_backbone(args.checkpoint)
    if args.format == "onnx":
        from faceflow.export.onnx_export import export_onnx

        print(describe(args.out, export_onnx(model, args.out, images, opset)))
    else:
        from faceflow.export.mxnet_export import export_mxnet

        print(describe(f"{args.prefix}-symbol.json", export_mxnet(model, args.prefix, images)))
    return 0
