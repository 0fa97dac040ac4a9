"""Pack a folder-per-identity image tree into an InsightFace-layout RecordIO dataset.

`ROOT/<identity>/<image>`: identities sorted by folder name get labels 0..C-1 (empty folders are
skipped); JPEG files are stored byte for byte, other formats re-encoded as JPEG quality 95. All
images must share one size (the `property` file records it). `identities.tsv` maps label -> folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from faceflow.data.atomic import atomic_file
from faceflow.data.image_bytes import image_problem, image_size_of_bytes, to_jpeg
from faceflow.data.recordio import write_insightface_dataset
from faceflow.errors import DataFormatError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
IDENTITIES_NAME = "identities.tsv"


@dataclass
class PackSummary:
    """What `pack_folder` wrote."""

    images: int
    classes: int
    reencoded: int
    image_size: tuple[int, int]

    def line(self) -> str:
        """The closing line printed by `faceflow pack`."""
        h, w = self.image_size
        return f"{self.images} images, {self.classes} classes, {w}x{h}, {self.reencoded} re-encoded as JPEG"


def scan_folder(root: str | Path) -> list[tuple[str, list[Path]]]:
    """(identity name, sorted image paths) for every non-empty identity folder, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a directory")
    identities = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if "\t" in folder.name or "\n" in folder.name:
            raise DataFormatError(f"{folder}: identity folder name holds a tab or newline "
                                  f"({IDENTITIES_NAME} could not list it)")
        images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            identities.append((folder.name, images))
    if not identities:
        raise DataFormatError(f"{root}: no identity folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return identities


def pack_folder(root: str | Path, out_dir: str | Path, progress: bool = True) -> PackSummary:
    """Write `out_dir/{train.rec, train.idx, property, identities.tsv}` from the image tree at `root`."""
    identities = scan_folder(root)
    total = sum(len(images) for _, images in identities)
    first_path = identities[0][1][0]
    first = first_path.read_bytes()
    problem = image_problem(first)
    if problem is not None:
        raise DataFormatError(f"{first_path}: {problem}")
    image_size = image_size_of_bytes(first)
    reencoded = 0

    def records() -> Iterator[tuple[int, bytes]]:
        with tqdm(total=total, unit="img", desc="pack", disable=not progress, mininterval=0.5) as bar:
            for label, (_, images) in enumerate(identities):
                for path in images:
                    data = path.read_bytes()
                    problem = image_problem(data)
                    if problem is not None:
                        raise DataFormatError(f"{path}: {problem}")
                    jpeg = to_jpeg(data)
                    nonlocal reencoded
                    reencoded += jpeg is not data
                    size = image_size_of_bytes(jpeg)
                    if size != image_size:
                        h, w = image_size
                        raise DataFormatError(f"{path}: image is {size[1]}x{size[0]}, the first image was "
                                              f"{w}x{h} (align faces to one size)")
                    bar.update(1)
                    yield label, jpeg

    out_dir = Path(out_dir)
    write_insightface_dataset(out_dir, records(), len(identities), image_size)
    with atomic_file(out_dir / IDENTITIES_NAME) as tmp:  # folder names byte for byte, even if not UTF-8
        tmp.write_text("".join(f"{label}\t{name}\n" for label, (name, _) in enumerate(identities)),
                       errors="surrogateescape")
    return PackSummary(total, len(identities), reencoded, image_size)
