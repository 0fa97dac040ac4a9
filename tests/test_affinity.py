"""CPU pinning of the processes of a multi-process CPU run (faceflow/runtime/affinity.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from faceflow.runtime.affinity import cpu_share


@pytest.mark.parametrize("rank,world,allowed,expected", [
    (0, 2, [0, 1], [0]),
    (1, 2, [0, 1], [1]),
    (1, 2, [4, 5, 6, 7], [6, 7]),
    (1, 2, [0, 1, 2], [1]),          # the odd CPU is left to the system, not given twice
    (2, 3, [3, 8, 9, 10, 11, 12], [11, 12]),
])
def test_each_local_rank_gets_its_own_equal_slice(rank, world, allowed, expected):
    assert cpu_share(rank, world, allowed) == expected


@pytest.mark.parametrize("rank,world,allowed", [(0, 1, [0, 1]), (0, 3, [0, 1]), (2, 2, [0, 1])])
def test_no_share_for_one_process_too_few_cpus_or_a_bad_rank(rank, world, allowed):
    assert cpu_share(rank, world, allowed) is None


PROBE = """
import json, os, threading
from faceflow.runtime.affinity import pin_local_rank
stop = threading.Event()
worker = threading.Thread(target=stop.wait); worker.start()
share = pin_local_rank(1, 2)
later = threading.Thread(target=stop.wait); later.start()
masks = {int(t): sorted(os.sched_getaffinity(int(t))) for t in os.listdir('/proc/self/task')}
stop.set(); worker.join(); later.join()
print(json.dumps({"share": share, "masks": list(masks.values())}))
"""


def test_pinning_covers_threads_started_before_and_after():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"needs 2 CPUs to pin a second local rank, this machine allows {len(cpus)}")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout)
    share = cpus[len(cpus) // 2:2 * (len(cpus) // 2)]
    assert result["share"] == share
    assert len(result["masks"]) >= 3  # main thread, the one started before, the one started after
    assert all(mask == share for mask in result["masks"])
