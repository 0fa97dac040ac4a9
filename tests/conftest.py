"""Shared test setup: Snakemake and the SLURM tools read $USER, which CI does not set; faceflow's check cache
goes to a per-session temporary folder (never the user's ~/.cache); slow tests go first."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("USER", "root")

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True, scope="session")
def _check_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """$FACEFLOW_CACHE_DIR for this session and the processes it starts."""
    from faceflow.data.check_cache import CACHE_ENV

    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("faceflow-cache"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the full workflow (`e2e`) first, then the other `slow` tests, the rest in their order: with
    `make test`'s two workers the longest file goes to one worker at once and the other tests fill the
    cores it leaves idle."""
    items.sort(key=lambda item: (item.get_closest_marker("e2e") is None, item.get_closest_marker("slow") is None))
