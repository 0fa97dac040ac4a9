"""Per-process training entry: `python -m faceflow.train.worker CONFIG [--out DIR] [--set k=v ...]`.

`faceflow train` runs this in-process for one process, or through `faceflow.runtime.launch`
once per rank; every rank resolves the same config and joins the same global-tensor run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from faceflow.errors import FaceflowError
from faceflow.runtime.lifetime import exit_with_parent

if TYPE_CHECKING:
    from faceflow.data.train_parts import TrainData


def build_parser(prog: str = "faceflow train") -> argparse.ArgumentParser:
    """Options shared by `faceflow train` and the worker."""
    parser = argparse.ArgumentParser(prog=prog, description="Train a face recognition model from a YAML config.")
    parser.add_argument("config", metavar="CONFIG", help="YAML file or shipped config name (e.g. demo)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (YAML value; nested keys with dots); repeatable")
    parser.add_argument("--out", default=None, metavar="DIR", help="run directory (default runs/<config name>)")
    parser.add_argument("--do-validation-while-train", action="store_true",
                        help="validate on val_benchmarks every validate_every steps (default: checkpoint_every)")
    return parser


def default_out_dir(config_source: str) -> Path:
    """runs/<config file stem or shipped name>."""
    return Path("runs") / Path(config_source).stem


def resolve(args: argparse.Namespace, progress: bool = False, announce: Callable[[str], None] | None = None) -> dict:
    """The validated, dataset-resolved config the run uses (same on every rank).

    Every training record is checked first (cached per part after the first time); the check's counts size
    a training folder that has no meta.json.
    """
    from faceflow.train.config import load_config, resolve_dataset

    config = load_config(args.config, args.overrides)
    data = verified_train_data(config, progress, announce)
    config = resolve_dataset(config, data.counts() if data is not None else None)
    if args.do_validation_while_train and not config["validate_every"]:
        config["validate_every"] = config["checkpoint_every"]
    if args.do_validation_while_train and not config["val_benchmarks"]:
        raise FaceflowError("val_benchmarks: --do-validation-while-train needs at least one benchmark")
    return config


def verified_train_data(config: dict, progress: bool = False,
                        announce: Callable[[str], None] | None = None) -> "TrainData | None":
    """The checked training folder of `config` (None when train_data is not a folder: resolve_dataset says why)."""
    from faceflow.data.train_parts import verify_train_parts

    if not config["train_data"] or not Path(config["train_data"]).is_dir():
        return None
    return verify_train_parts(config["train_data"], config["bad_images"], progress, announce)


def run(args: argparse.Namespace) -> int:
    """Train (or resume, or report already finished) in this process."""
    from faceflow.train.engine import Trainer

    config = resolve(args)
    out_dir = Path(args.out) if args.out else default_out_dir(args.config)
    Trainer(config, out_dir).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry of one training process; user errors print one line and exit 1."""
    args = build_parser("faceflow.train.worker").parse_args(sys.argv[1:] if argv is None else argv)
    exit_with_parent()
    try:
        return run(args)
    except FaceflowError as err:
        print(f"faceflow train: error: {err}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
