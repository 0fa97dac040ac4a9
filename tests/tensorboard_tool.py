"""TensorBoard itself (the reader and the server `tensorboard --logdir`), from a cached test venv, to check the
event files faceflow writes with tensorboardX the way a user's TensorBoard reads them."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cached_venv import cached_venv

PINS = ("tensorboard==2.20.0",)
# every run under LOGDIR as TensorBoard discovers them: {run: {tag: [[step, value, wall_time], ...]}}
_READER = """
import json, sys
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
mux = EventMultiplexer().AddRunsFromDirectory(sys.argv[1])
mux.Reload()
print(json.dumps({run: {tag: [[e.step, e.value, e.wall_time] for e in mux.Scalars(run, tag)]
                        for tag in tags["scalars"]} for run, tags in mux.Runs().items()}))
"""


def tensorboard_python() -> Path:
    """The cached venv's python with TensorBoard installed."""
    return cached_venv("tensorboard-venv", PINS)


def read_scalars(logdir: Path) -> dict[str, dict[str, list[list[float]]]]:
    """Every scalar under `logdir`, read by TensorBoard's event multiplexer, by run (path relative to logdir)."""
    done = subprocess.run([str(tensorboard_python()), "-c", _READER, str(logdir)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def served_scalars(logdir: Path, port: int, queries: list[tuple[str, str]], timeout: float = 240) -> dict[tuple, Any]:
    """Start `tensorboard --logdir LOGDIR` and return what its HTTP API serves for each (run, tag) of `queries`
    ({(run, tag): [[wall_time, step, value], ...]}) once it lists all their runs; the server is stopped afterwards."""
    runs = [run for run, _ in queries]
    # `python -m`: the venv's console scripts name the temporary path it was built under
    command = [str(tensorboard_python()), "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
               "--host", "127.0.0.1", "--reload_interval", "1"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                listed = _get(f"{base}/data/runs")
                if all(run in listed for run in runs):
                    break
            except OSError:
                pass
            assert server.poll() is None, f"tensorboard exited: {server.stderr.read()[-2000:]}"
            assert time.time() < deadline, f"tensorboard did not list {runs} within {timeout:.0f} s"
            time.sleep(1)
        query = "{base}/data/plugin/scalars/scalars?{query}"
        return {(run, tag): _get(query.format(base=base, query=urllib.parse.urlencode({"run": run, "tag": tag})))
                for run, tag in queries}
    finally:
        server.terminate()
        server.wait(timeout=30)
