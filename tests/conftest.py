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


@pytest.fixture(scope="session")
def torch_reference():
    """arcface_torch-layout models written by PyTorch itself (torch venv, see torch_venv.py): state dicts, their
    embeddings of three drawn faces, ONNX exports. Returns (their directory, the faces as uint8 N x 112 x 112 x 3)."""
    from faceflow.export.parity import drawn_faces, normalised_nchw
    from torch_venv import reference_models

    faces = drawn_faces(3, seed=5)

    def spec(name: str, network: str, seed: int, onnx=(), **extra):
        return {"network": network, "embedding_size": 64, "seed": seed, "pth": f"{name}.pth",
                "embeddings": f"{name}.npy", "onnx": [{"path": f"{name}_{mode}.onnx", "mode": mode} for mode in onnx],
                **extra}

    work = reference_models([spec("r18", "r18", 1, ("fold", "preserve", "dynamo")),
                             spec("r18_legacy", "r18", 1, legacy=True, wrapped=True),
                             spec("mbf", "mbf", 2, ("fold",)),
                             spec("mbf_tiny", "mbf", 4, blocks=[1, 1, 1], scale=1),
                             spec("r50", "r50", 3)], normalised_nchw(faces))
    return work, faces
