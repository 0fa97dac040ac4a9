"""Training throughput, eager vs nn.Graph: samples/s for mbf and r18 at batch 32 on one CPU process.

Each network is built twice in one process, eagerly and as an nn.Graph, and runs the real engine step
(backbone + data-parallel ArcFace head + SGD momentum/wd + LR schedule) on a fixed random 112x112 batch.
After untimed warm-up steps (graph compile), timed blocks of `--steps` steps alternate between the two
modes for `--rounds` rounds (the order flips each round), so that a machine whose speed drifts affects
both alike. Every block starts and ends with a full sync of OneFlow's virtual machine: a step returns
once its loss is known, while eager backward and update are still queued, and without the sync that
queued work (most of a step) was charged to the next block, which made 2-step eager blocks look up to
1.5x faster or slower depending on what came before (per-round ratios 0.83x-1.57x; with the sync
1.23x-1.51x). Per-round and overall ratios (graph / eager) are printed last.
`python bench/train.py [--steps N] [--rounds R] [--warmup W]`.

On CPU the graph saves per-op dispatch and allocation (nn.Graph has no CPU fusion of BatchNorm or
PReLU into convolutions; in mbf these memory-bound ops cost about as much as the convolutions). Graph
options (fuse_add_to_output, fused model update, multi-tensor update, SpeedFirst straightening) changed
mbf by no more than the run-to-run noise (about 3%). With 2 cores, OneFlow's spinning VM threads and
the compute threads compete (a third of the CPU time goes to the kernel).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from faceflow.runtime.flow import flow

from faceflow.runtime.device import wait_for_queued_work
from faceflow.train.config import DEFAULTS, validate_config
from faceflow.train.engine import Trainer

BATCH = 32
NETWORKS = {"mbf": {"embedding_size": 128}, "r18": {"embedding_size": 512}}


def build(network: str, graph: bool) -> Trainer:
    """A trainer of `network` at batch 32 (1000 classes) in eager or graph mode, with its modules built."""
    config = validate_config({**DEFAULTS, **NETWORKS[network], "network": network, "num_classes": 1000,
                              "batch_size": BATCH, "max_steps": 10**6, "graph": graph})
    trainer = Trainer(config, tempfile.mkdtemp(prefix="bench-train-"))
    trainer._build()
    return trainer


def compare(network: str, steps: int, rounds: int, warmup: int) -> list[tuple[float, float]]:
    """(eager, graph) seconds of each round's block of `steps` steps, the two modes alternating."""
    trainers = {graph: build(network, graph) for graph in (False, True)}
    placement = trainers[False].placement
    rng = np.random.RandomState(0)
    images = flow.tensor(rng.randn(BATCH, 3, 112, 112).astype(np.float32), placement=placement,
                         sbp=flow.sbp.split(0))
    labels = flow.tensor(rng.randint(0, 1000, BATCH).astype(np.int32), placement=placement, sbp=flow.sbp.split(0))
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.step(images, labels)
    blocks = []
    for number in range(rounds):
        seconds = {}
        for graph in ((False, True) if number % 2 == 0 else (True, False)):
            wait_for_queued_work()
            start = time.perf_counter()
            for _ in range(steps):
                trainers[graph].step(images, labels)
            wait_for_queued_work()  # the block's queued backward and update, charged to it
            seconds[graph] = time.perf_counter() - start
        blocks.append((seconds[False], seconds[True]))
        print(f"{network:4s} round {number}: eager {BATCH * steps / seconds[False]:7.2f}  graph "
              f"{BATCH * steps / seconds[True]:7.2f} samples/s  ratio {seconds[False] / seconds[True]:.2f}x",
              flush=True)
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=3, help="eager/graph block pairs per network")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode (graph compile)")
    args = parser.parse_args()
    results = {network: compare(network, args.steps, args.rounds, args.warmup) for network in NETWORKS}
    for network, blocks in results.items():
        rounds = " ".join(f"{eager / graph:.2f}" for eager, graph in blocks)
        total = sum(eager for eager, _ in blocks) / sum(graph for _, graph in blocks)
        print(f"ratio {network} graph/eager: {total:.2f}x over {len(blocks)} rounds ({rounds}) (goal >= 1.2x)")


if __name__ == "__main__":
    main()
