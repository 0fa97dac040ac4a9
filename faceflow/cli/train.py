"""`faceflow train CONFIG [--set k=v ...] [--out DIR] [--restart-if-changed] [--nproc-per-node N [--nnodes M ...]]`.

On several nodes it runs once per node, started by hand with --node-rank/--master-addr on each, or by
`srun --ntasks-per-node=1 faceflow train ... --from-slurm`, which reads them from SLURM
(faceflow.runtime.slurm_nodes). Node 0 prepares OUT and its rank 0 writes checkpoints and logs.

One process trains in this interpreter; several are started with `faceflow.runtime.launch`
(oneflow.distributed.launch with the CUDA libraries loaded first), each running faceflow.train.worker.
Before that, every training record is checked (faceflow.data.train_parts: bad_images fail or skip, cached
per part), every combination that cannot run is refused (faceflow.train.rules: the device, the world
size, the data's OFRecord parts), and OUT's checkpoints are checked against the config
(faceflow.train.resume): same training settings resume, changed ones stop with an error or, with
--restart-if-changed, are set aside. A CUDA run outside a scheduler leases its GPUs first
(faceflow.runtime.gpus), for as long as it runs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from faceflow.errors import ConfigError, FaceflowError
from faceflow.runtime.gpus import GpuLease, claim_gpus
from faceflow.runtime.lifetime import child_env
from faceflow.runtime.slurm_nodes import slurm_placement
from faceflow.train import worker
from faceflow.train.metrics import TrainLog
from faceflow.train.resume import prepare_out_dir
from faceflow.train.rules import check_gpus, check_run, check_train_data


def _parser() -> argparse.ArgumentParser:
    parser = worker.build_parser()
    parser.add_argument("--restart-if-changed", action="store_true",
                        help="if OUT's checkpoints were trained with other settings, move them to OUT/superseded/ "
                             "and train from step 0 (without it that is an error; same settings always resume)")
    group = parser.add_argument_group("multi-process")
    group.add_argument("--nproc-per-node", type=int, default=None, metavar="N",
                       help="processes on this node (default: the config's nproc_per_node, 1 unless set)")
    group.add_argument("--nnodes", type=int, default=None, metavar="M", help="number of nodes (default 1)")
    group.add_argument("--node-rank", type=int, default=0, metavar="R", help="rank of this node")
    group.add_argument("--master-addr", default="127.0.0.1", metavar="A", help="address of node 0")
    group.add_argument("--master-port", type=int, default=29500, metavar="P", help="free port on node 0")
    group.add_argument("--from-slurm", action="store_true",
                       help="take the node count, this node's rank and node 0's address from the SLURM job step "
                            "(run once per node: srun --ntasks-per-node=1 faceflow train ... --from-slurm)")
    return parser


def _worker_args(args: argparse.Namespace, out_dir: Path) -> list[str]:
    argv = [args.config, "--out", str(out_dir)]
    for item in args.overrides:
        argv += ["--set", item]
    if args.do_validation_while_train:
        argv.append("--do-validation-while-train")
    return argv


def _device(requested: str) -> str:
    """The device the run trains on; only a config that may use CUDA imports OneFlow here to look for it."""
    if requested == "cpu":
        return requested
    from faceflow.runtime.device import resolve_device

    try:
        return resolve_device(requested)
    except RuntimeError as err:
        raise ConfigError(str(err)) from None


def _place_node(args: argparse.Namespace) -> None:
    """Fill --nnodes (default 1), and with --from-slurm --node-rank and --master-addr, from SLURM."""
    if not args.from_slurm:
        args.nnodes = 1 if args.nnodes is None else args.nnodes
        return
    placement = slurm_placement()
    if args.nnodes is not None and args.nnodes != placement.nnodes:
        raise FaceflowError(f"--nnodes {args.nnodes}: the SLURM job step has {placement.nnodes} node(s)")
    args.nnodes, args.node_rank, args.master_addr = placement.nnodes, placement.node_rank, placement.master_addr


def _check_world(args: argparse.Namespace) -> tuple[dict, int, GpuLease | None]:
    """The config, the world size and the run's GPU lease (None if it needs none), after refusing what
    cannot run, before any worker process starts.

    Sets `args.nproc_per_node` from the config's `nproc_per_node` when the option was not given, and
    `device: auto` to the device it resolves to on this node, so that every rank trains on the same one.
    """
    _place_node(args)
    if args.nnodes < 1 or (args.nproc_per_node is not None and args.nproc_per_node < 1):
        raise FaceflowError("--nproc-per-node and --nnodes must be >= 1")
    if not 0 <= args.node_rank < args.nnodes:
        raise FaceflowError(f"--node-rank {args.node_rank}: must be in [0, {args.nnodes})")
    config = worker.resolve(args, progress=sys.stderr.isatty(), announce=lambda line: print(line, flush=True))
    if args.nproc_per_node is None:
        args.nproc_per_node = config["nproc_per_node"]
    world = args.nproc_per_node * args.nnodes
    lease = claim_gpus(config["device"], args.nproc_per_node)  # before _device loads OneFlow, which starts CUDA
    try:
        device = _checked_device(args, config, world)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    if device != "cuda" and lease is not None:  # `auto` found GPUs that OneFlow cannot use
        lease.release()
        lease = None
    return config, world, lease


def _checked_device(args: argparse.Namespace, config: dict, world: int) -> str:
    """The device the run trains on, after refusing what cannot run on it (see `_check_world`)."""
    device = _device(config["device"])
    if device != config["device"]:
        args.overrides.append(f"device={device}")
        config["device"] = device
    check_run(config, world, device)
    if device == "cuda":
        from faceflow.runtime.device import visible_gpus

        check_gpus(args.nproc_per_node, visible_gpus())
    check_train_data(config, world, worker.verified_train_data(config).read_dir)  # the check's cached result
    return device


def main(argv: list[str]) -> int:
    """Validate the config, then train in-process or launch one worker per rank."""
    args = _parser().parse_args(argv)
    config, world, lease = _check_world(args)
    try:
        out_dir = Path(args.out) if args.out else worker.default_out_dir(args.config)
        if args.node_rank == 0:  # other nodes' workers look at OUT only after joining node 0's, started below
            log = TrainLog(out_dir, True).message
            prepare_out_dir(out_dir, config, world, args.restart_if_changed, log)
            lines = worker.verified_train_data(config).log_lines()  # the check's cached result
            if lines:
                out_dir.mkdir(parents=True, exist_ok=True)
            for line in lines:
                log(line)
        return _train(args, out_dir, world)
    finally:
        if lease is not None:
            lease.release()


def _train(args: argparse.Namespace, out_dir: Path, world: int) -> int:
    """Train in this process, or start the launcher and wait for its workers."""
    if world == 1:
        return worker.run(args)
    logdir = out_dir / "launch_logs"
    if args.nnodes > 1:  # OUT is shared by the nodes
        logdir = logdir / f"node_{args.node_rank}"
    command = [sys.executable, "-m", "faceflow.runtime.launch",
               "--nproc_per_node", str(args.nproc_per_node), "--nnodes", str(args.nnodes),
               "--node_rank", str(args.node_rank), "--master_addr", args.master_addr,
               "--master_port", str(args.master_port), "--logdir", str(logdir),
               "--module", "faceflow.train.worker", *_worker_args(args, out_dir)]
    code = subprocess.call(command, env=child_env())
    if code:
        raise FaceflowError(f"training processes failed (exit code {code}); see the messages above")
    return 0
