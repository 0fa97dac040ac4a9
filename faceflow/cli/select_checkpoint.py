"""`faceflow select-checkpoint RULE CHECKPOINTS_DIR VALIDATION_DIR`: print the checkpoint the export uses.

RULE is `last` or `best:<benchmark>` (faceflow.workflow.selection); the export rule runs it once
validation has written the results `best:` compares.
"""
from __future__ import annotations

import argparse

from faceflow.workflow.selection import select_checkpoint


def main(argv: list[str]) -> int:
    """Print the selected checkpoint directory (FaceflowError, reported by faceflow.cli.main, when there is none)."""
    parser = argparse.ArgumentParser(prog="faceflow select-checkpoint", description=__doc__)
    parser.add_argument("rule", help="last | best:<benchmark>")
    parser.add_argument("checkpoints_dir")
    parser.add_argument("validation_dir")
    args = parser.parse_args(argv)
    print(select_checkpoint(args.rule, args.checkpoints_dir, args.validation_dir))
    return 0
