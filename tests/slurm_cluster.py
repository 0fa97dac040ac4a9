"""Test fixture: a throwaway two-node SLURM cluster (scripts/slurm/start.sh with SLURM_TEST_NODES=2: each
slurmd in a network namespace of its own), stopped afterwards with its namespaces removed.

The Debian packages are installed with scripts/slurm/install.sh when missing; the fixture skips
(with the reason) only when they cannot be installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts" / "slurm"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server", "iproute2")
SACCT_FIELDS = ("JobIDRaw", "JobName", "State", "AllocTRES", "NNodes", "WorkDir")
NODES = 2


def missing_packages() -> list[str]:
    """The cluster's Debian packages that are not installed."""
    if shutil.which("dpkg-query") is None:
        return list(PACKAGES)
    missing = []
    for pkg in PACKAGES:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                                capture_output=True, text=True).stdout
        if "install ok installed" not in status:
            missing.append(pkg)
    return missing


def install_problem() -> str | None:
    """Install the missing packages; None when all are there, else why they cannot be installed."""
    missing = missing_packages()
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"SLURM packages {' '.join(missing)} missing and apt-get is not available"
    if os.geteuid() != 0:
        return f"SLURM packages {' '.join(missing)} missing and installing them needs root"
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPTS / "install.sh")], capture_output=True, text=True,
                          timeout=1200)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"apt-get could not install {' '.join(missing)}: {last[0]}"
    print(f"installed {' '.join(missing)} in {time.monotonic() - started:.0f}s")
    return None


@dataclass
class SlurmCluster:
    """A running cluster: its directory and the environment its client commands need."""

    root: Path
    env: dict[str, str]

    @property
    def nodes(self) -> list[str]:
        """The node names (node0, node1, ...)."""
        return (self.root / "nodes").read_text().split()

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster (stdout and stderr captured)."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def jobs(self, workdir: Path) -> list[dict[str, str]]:
        """sacct records (main allocation only) of the jobs whose working directory is workdir."""
        out = self.run("sacct", "-a", "-X", "-n", "-P", "-o", ",".join(SACCT_FIELDS)).stdout
        rows = [dict(zip(SACCT_FIELDS, line.split("|"))) for line in out.splitlines()]
        return [row for row in rows if row.get("WorkDir") == str(workdir)]

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)


def stop_cluster(root: Path) -> None:
    """Stop every daemon started under root, remove its network namespaces and bridge, then root; fails
    (an error of the module's last test) when one of them is left."""
    made = (root / "run" / "netns.list").read_text().split() if (root / "run" / "netns.list").is_file() else []
    pids = [int(p.read_text()) for p in (root / "run").glob("*.pid") if p.read_text().strip().isdigit()]
    subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(root)], timeout=120)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left = [name for kind, name in zip(made[::2], made[1::2])
            if (kind == "netns" and name in namespaces) or (kind == "bridge" and f" {name}:" in links)]
    left += [f"pid {pid}" for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not left, f"the SLURM test cluster left {', '.join(left)}"


@pytest.fixture(scope="module")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[SlurmCluster]:
    """Start the cluster once per test module; the finalizer stops it even when start-up fails."""
    problem = install_problem() or (None if os.geteuid() == 0 else
                                    "the cluster's network namespaces (one per node) need root")
    if problem:
        print(f"skipped: {problem}")
        pytest.skip(problem)
    root = Path(tempfile.mkdtemp(prefix="faceflow-slurm-"))
    request.addfinalizer(lambda: stop_cluster(root))
    env = {**os.environ, "USER": os.environ.get("USER", "root"), "PYTHON": sys.executable,
           "SLURM_TEST_NODES": str(NODES)}
    started = subprocess.run(["bash", str(SCRIPTS / "start.sh"), str(root)], env=env,
                             capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, f"start.sh failed:\n{started.stderr}"
    env["SLURM_CONF"] = str(root / "etc" / "slurm.conf")
    yield SlurmCluster(root, env)
