"""Partial FC vs full FC: time and peak memory of one FC + loss forward/backward/SGD update (CPU, 1 process).

Embedding 512, batch 128, 100k and 1M classes, arcface margins; each case runs in its own subprocess so
its peak RSS (VmHWM) is its own. Partial FC is measured with exact per-class momentum (case `pfc`, config
`partial_fc_momentum: exact`: keeps a momentum table) and with momentum reset on resampling (case
`pfc_reset`, `partial_fc_momentum: reset`: no table). Ratios vs full FC print last.
The peak is a training run's: over one warm-up step and `--steps` timed ones (default 3). The optimizer
creates its state during the first update, so from the second step on the full FC's momentum (a class
table) is live through forward and backward; a single step after the warm-up does not always show it.
Each timed step ends with a full sync of OneFlow's virtual machine: the loss is ready long before the
backward and the update have run, so timing until the loss alone undercounted the full FC's step about
threefold (1.0 s against 3.2 s at 100k classes).
Usage: `python bench/partial_fc.py [--classes 100000 1000000] [--steps 3]`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = ("full", "pfc", "pfc_reset")


def _vm_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_case(case: str, classes: int, steps: int, batch: int, emb: int) -> dict:
    """Build the head + SGD, run 1 warm-up and `steps` timed steps; return seconds/step and memory (MiB)."""
    from faceflow.runtime.flow import flow

    from faceflow.heads import build_head
    from faceflow.runtime.device import all_ranks_placement, wait_for_queued_work

    flow.manual_seed(0)
    placement = all_ranks_placement("cpu")
    baseline = _vm_kib("VmRSS")
    config = {"loss": "arcface", "margins": None, "num_classes": classes, "embedding_size": emb,
              "batch_size": batch, "fc_mode": "data_parallel" if case == "full" else "partial_fc",
              "sample_rate": 1.0 if case == "full" else 0.1}
    head = build_head(config, placement)
    optimizer = flow.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    if case != "full":
        head.bind_optimizer(optimizer, keep_momentum=case == "pfc")
    sbp = flow.sbp.split(0)
    times = []
    for step in range(steps + 1):
        embeddings = flow.randn(batch, emb, placement=placement, sbp=sbp).requires_grad_(True)
        labels = flow.randint(0, classes, (batch,), placement=placement, sbp=sbp)
        start = time.perf_counter()
        loss = head(embeddings, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # as the training engine does
        float(loss.to_local().numpy())
        wait_for_queued_work()  # the loss is ready before backward and update have run
        if step > 0:
            times.append(time.perf_counter() - start)
    return {"case": case, "classes": classes, "seconds": min(times),
            "peak_mib": _vm_kib("VmHWM") / 1024, "baseline_mib": baseline / 1024}


def main(argv: list[str] | None = None) -> int:
    """Run every (classes, case) in a subprocess, print a table and the ratios against full FC."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--emb", type=int, default=512)
    parser.add_argument("--one", nargs=2, metavar=("CASE", "CLASSES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(args.one[0], int(args.one[1]), args.steps, args.batch, args.emb)))
        return 0
    results = {}
    for classes in args.classes:
        for case in args.cases:
            cmd = [sys.executable, __file__, "--one", case, str(classes), "--steps", str(args.steps),
                   "--batch", str(args.batch), "--emb", str(args.emb)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            results[(classes, case)] = row
            print(f"{classes:>9,d} classes  {case:<9}  {row['seconds']:8.3f} s/step  peak RSS {row['peak_mib']:8.0f} MiB"
                  f"  (FC part {row['peak_mib'] - row['baseline_mib']:8.0f} MiB)", flush=True)
    print("\nratios vs full FC (goal at 1M: time <= 0.25, peak memory <= 0.5):")
    for classes in args.classes:
        full = results.get((classes, "full"))
        if full is None:
            continue
        for case in [case for case in args.cases if case != "full"]:
            row = results[(classes, case)]
            fc_ratio = (row["peak_mib"] - row["baseline_mib"]) / (full["peak_mib"] - full["baseline_mib"])
            print(f"{classes:>9,d} classes  {case:<9}  time {row['seconds'] / full['seconds']:.3f}x  "
                  f"peak RSS {row['peak_mib'] / full['peak_mib']:.3f}x  FC memory {fc_ratio:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
