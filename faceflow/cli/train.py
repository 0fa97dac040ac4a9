"""`faceflow train CONFIG [--set k=v ...] [--out DIR] [--nproc-per-node N [--nnodes M --node-rank R ...]]`.

One process trains in this interpreter; several are started with `faceflow.runtime.launch`
(oneflow.distributed.launch with the CUDA libraries loaded first), each running faceflow.train.worker.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from faceflow.errors import FaceflowError
from faceflow.train import worker


def _parser() -> argparse.ArgumentParser:
    parser = worker.build_parser()
    group = parser.add_argument_group("multi-process")
    group.add_argument("--nproc-per-node", type=int, default=1, metavar="N", help="processes on this node")
    group.add_argument("--nnodes", type=int, default=1, metavar="M", help="number of nodes")
    group.add_argument("--node-rank", type=int, default=0, metavar="R", help="rank of this node")
    group.add_argument("--master-addr", default="127.0.0.1", metavar="A", help="address of node 0")
    group.add_argument("--master-port", type=int, default=29500, metavar="P", help="free port on node 0")
    return parser


def _worker_args(args: argparse.Namespace, out_dir: Path) -> list[str]:
    argv = [args.config, "--out", str(out_dir)]
    for item in args.overrides:
        argv += ["--set", item]
    if args.do_validation_while_train:
        argv.append("--do-validation-while-train")
    return argv


def _check_world(args: argparse.Namespace, world: int) -> None:
    """Fail before launching when the data or the config cannot work with `world` processes."""
    from faceflow.data.pipeline import check_parts_divisible

    if args.nproc_per_node < 1 or args.nnodes < 1:
        raise FaceflowError("--nproc-per-node and --nnodes must be >= 1")
    if not 0 <= args.node_rank < args.nnodes:
        raise FaceflowError(f"--node-rank {args.node_rank}: must be in [0, {args.nnodes})")
    config = worker.resolve(args)
    check_parts_divisible(config["train_data"], world)


def main(argv: list[str]) -> int:
    """Validate the config, then train in-process or launch one worker per rank."""
    args = _parser().parse_args(argv)
    world = args.nproc_per_node * args.nnodes
    _check_world(args, world)
    out_dir = Path(args.out) if args.out else worker.default_out_dir(args.config)
    if world == 1:
        return worker.run(args)
    command = [sys.executable, "-m", "faceflow.runtime.launch",
               "--nproc_per_node", str(args.nproc_per_node), "--nnodes", str(args.nnodes),
               "--node_rank", str(args.node_rank), "--master_addr", args.master_addr,
               "--master_port", str(args.master_port), "--logdir", str(out_dir / "launch_logs"),
               "--module", "faceflow.train.worker", *_worker_args(args, out_dir)]
    code = subprocess.call(command)
    if code:
        raise FaceflowError(f"training processes failed (exit code {code}); see the messages above")
    return 0
