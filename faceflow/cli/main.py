"""`faceflow COMMAND ...`: dispatch to the command's module, which owns its own argument parser."""
from __future__ import annotations

import importlib
import sys

from faceflow.errors import FaceflowError

# command -> (module with `main(argv: list[str]) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("faceflow.cli.synth", "draw the built-in synthetic face dataset (InsightFace layout)"),
    "index": ("faceflow.cli.index", "rebuild train.idx by scanning train.rec"),
    "align": ("faceflow.cli.align", "align a folder-per-identity tree of photos to 112x112 crops (5 landmarks)"),
    "pack": ("faceflow.cli.pack", "pack a folder-per-identity image tree into an InsightFace dataset"),
    "convert": ("faceflow.cli.convert", "convert rec|bin to OFRecord parts"),
    "download": ("faceflow.cli.download", "fetch a dataset (http/https/file URL), verify sha256, unpack"),
    "train": ("faceflow.cli.train", "train a face recognition model from a YAML config"),
    "keys": ("faceflow.cli.keys", "list the training-config keys (defaults, allowed values, workflow run keys)"),
    "validate": ("faceflow.cli.validate", "verification accuracy of a checkpoint on LFW/CFP-FP/AgeDB-30"),
    "ijb": ("faceflow.cli.ijb", "IJB-B / IJB-C 1:1 TAR@FAR (and 1:N) of a checkpoint or ONNX model"),
    "select-checkpoint": ("faceflow.cli.select_checkpoint",
                          "print the checkpoint an export uses (last, or best:<benchmark> by validation)"),
    "exported-model": ("faceflow.cli.exported_model",
                       "print the model an export bundle publishes (its ONNX, else its checkpoint)"),
    "export": ("faceflow.cli.export", "export a checkpoint to onnx|mxnet"),
    "import": ("faceflow.cli.import_model", "import an MXNet, arcface_torch (.pth) or ONNX model as a faceflow checkpoint"),
    "report": ("faceflow.cli.report", "accuracy tables and plots (CSV, Markdown, HTML) from run outputs"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: faceflow COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `faceflow COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `faceflow` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from faceflow import __version__

        print(f"faceflow {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"faceflow: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except FaceflowError as err:
        print(f"faceflow {name}: error: {err}", file=sys.stderr)
        return 1




if __name__ == "__main__":
    sys.exit(main())
