"""Results of expensive per-file checks, cached outside the data folder (which may be read-only).

An entry is keyed on the file's identity (resolved path, size, mtime, inode, device) plus whatever
else the result depends on, so a changed, replaced or copied file is checked again. The folder is
`$FACEFLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/faceflow`, else `~/.cache/faceflow`. Only faceflow
writes it: a data folder cannot vouch for itself.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from faceflow.data.atomic import atomic_file

CACHE_ENV = "FACEFLOW_CACHE_DIR"


def cache_root() -> Path:
    """The faceflow cache folder (not created)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "faceflow"


def file_identity(path: str | Path) -> dict[str, Any]:
    """What identifies one version of a file: resolved path, size, mtime (ns), inode and device."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    return {"path": str(resolved), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "device": st.st_dev}


def cache_key(kind: str, material: Any) -> str:
    """A stable hex key of a JSON-able value for entries of `kind`."""
    text = json.dumps([kind, material], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _entry(kind: str, material: Any) -> Path:
    return cache_root() / kind / f"{cache_key(kind, material)}.json"


def load(kind: str, material: Any) -> dict[str, Any] | None:
    """The cached result for `material`, or None (missing or unreadable entries count as missing)."""
    try:
        entry = json.loads(_entry(kind, material).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != material:
        return None
    return entry.get("result")


def store(kind: str, material: Any, result: dict[str, Any]) -> None:
    """Cache `result` for `material` (atomically); a cache that cannot be written is skipped silently."""
    try:
        with atomic_file(_entry(kind, material)) as tmp:
            tmp.write_text(json.dumps({"key": material, "result": result}) + "\n")
    except OSError:
        pass
