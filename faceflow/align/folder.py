"""`faceflow align`: a folder-per-identity tree of ordinary photos -> the same tree of aligned 112x112 crops
(JPEG quality 95), ready for `faceflow pack`.

Each photo is searched for faces; one face is aligned by its 5 landmarks (`similarity.norm_crop`). Photos
with no face, with several faces (unless the largest is taken), or that cannot be read are counted, listed
in `OUT/align_log.tsv` (path, reason) and skipped. The tree is written under a temporary name and renamed.
"""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from faceflow.align.detector import FaceBox, FaceDetector
from faceflow.align.similarity import norm_crop
from faceflow.data.atomic import atomic_dir
from faceflow.data.image_bytes import decode_rgb
from faceflow.data.pack import scan_folder
from faceflow.errors import DataFormatError, FaceflowError

LOG_NAME = "align_log.tsv"
MULTIPLE_FACES = ("skip", "largest")
JPEG_QUALITY = 95
REASONS = ("no_face", "multiple_faces", "no_landmarks", "unreadable")


@dataclass
class AlignSummary:
    """What `align_folder` did: crops written and photos skipped, by reason."""

    aligned: int = 0
    identities: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    largest_taken: int = 0

    def line(self) -> str:
        """The closing line printed by `faceflow align`."""
        parts = [f"{self.aligned} crops of {self.identities} identities"]
        parts += [f"{count} {reason.replace('_', ' ')}" for reason, count in self.skipped.items() if count]
        if self.largest_taken:
            parts.append(f"largest of several faces taken in {self.largest_taken}")
        return ", ".join(parts)


def _crop_names(images: list[Path]) -> dict[Path, str]:
    """Output file name of every photo of one identity: its stem + .jpg, the full name + .jpg when stems clash."""
    stems: dict[str, int] = {}
    for path in images:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {path: f"{path.stem if stems[path.stem] == 1 else path.name}.jpg" for path in images}


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a directory that is not an earlier `faceflow align` output."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FaceflowError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / LOG_NAME).is_file():
        raise FaceflowError(f"{out_dir}: not empty and not a `faceflow align` output (no {LOG_NAME}); "
                            "refusing to replace it")


def choose_face(faces: list[FaceBox], multiple: str) -> tuple[FaceBox | None, str | None]:
    """The face to align and None, or None and the reason the photo is skipped."""
    if not faces:
        return None, "no_face"
    if len(faces) > 1 and multiple == "skip":
        return None, "multiple_faces"
    return max(faces, key=lambda box: box.area), None


def warn_line(message: str) -> None:
    """One warning line on stderr that does not break the progress bar."""
    tqdm.write(message, file=sys.stderr)


def _encode(crop: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(crop).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def align_folder(raw_dir: str | Path, out_dir: str | Path, multiple: str = "skip", min_score: float = 0.5,
                 progress: bool = True, warn: Callable[[str], None] = warn_line) -> AlignSummary:
    """Align every photo of `raw_dir/<identity>/` into `out_dir/<identity>/` (see the module doc)."""
    if multiple not in MULTIPLE_FACES:
        raise FaceflowError(f"--multiple: expected one of {', '.join(MULTIPLE_FACES)}, got {multiple!r}")
    if not 0.0 < min_score <= 1.0:
        raise FaceflowError(f"--min-score: expected a detector score in (0, 1], got {min_score}")
    identities = scan_folder(raw_dir)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    summary = AlignSummary()
    log_lines = ["path\treason\tdetail\n"]
    total = sum(len(images) for _, images in identities)
    with atomic_dir(out_dir) as tmp, FaceDetector(min_score) as detector, \
            tqdm(total=total, unit="img", desc="align", disable=not progress, mininterval=0.5) as bar:
        for name, images in identities:
            written = 0
            for path, crop_name in _crop_names(images).items():
                bar.update(1)
                try:
                    image = decode_rgb(path.read_bytes(), str(path))
                except (DataFormatError, OSError) as err:
                    summary.skipped["unreadable"] += 1
                    log_lines.append(f"{path}\tunreadable\t{str(err).replace(chr(9), ' ')}\n")
                    warn(f"faceflow align: skipped {err}")
                    continue
                faces = detector.faces(image)
                face, reason = choose_face(faces, multiple)
                landmarks = None if face is None else detector.landmarks(image, face)
                if face is not None and landmarks is None:
                    reason = "no_landmarks"
                if reason is not None:
                    summary.skipped[reason] += 1
                    log_lines.append(f"{path}\t{reason}\t{len(faces)} faces\n")
                    continue
                summary.largest_taken += len(faces) > 1
                if not written:
                    (tmp / name).mkdir()
                (tmp / name / crop_name).write_bytes(_encode(norm_crop(image, landmarks, str(path))))
                written += 1
            summary.aligned += written
            summary.identities += written > 0
        (tmp / LOG_NAME).write_text("".join(log_lines))
    return summary
