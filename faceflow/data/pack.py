"""Pack a folder-per-identity image tree into an InsightFace-layout RecordIO dataset.

`ROOT/<identity>/<image>`: identities sorted by folder name get labels 0..C-1 (empty folders are
skipped); JPEG files are stored byte for byte, other formats (and CMYK JPEGs, which OneFlow's decoder
cannot read) re-encoded as RGB JPEG quality 95. Every JPEG is decoded as OneFlow's training decoder
would (in parallel over the usable CPUs) unless `verify` is off. All images must share one size (the
`property` file records it). `identities.tsv` maps label -> folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from faceflow.data.atomic import atomic_files
from faceflow.data.image_bytes import image_problem, image_size_of_bytes, is_jpeg, to_jpeg
from faceflow.data.image_verify import ImageChecker, needs_rgb_reencode, training_image_problem
from faceflow.data.recordio import IDX_NAME, PROPERTY_NAME, REC_NAME, write_insightface_dataset
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
    skipped: int = 0

    def line(self) -> str:
        """The closing line printed by `faceflow pack`."""
        h, w = self.image_size
        skipped = f", {self.skipped} bad skipped" if self.skipped else ""
        return (f"{self.images} images, {self.classes} classes, {w}x{h}, {self.reencoded} re-encoded as JPEG"
                f"{skipped}")


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


@dataclass
class LoadedImage:
    """One image file as it will be stored: JPEG bytes and (height, width) (None when unusable, with the reason)."""

    path: Path
    label: int
    jpeg: bytes | None
    problem: str | None = None
    reencoded: bool = False
    size: tuple[int, int] | None = None


def load_image(path: Path, label: int, verify: bool = True) -> LoadedImage:
    """One image file ready to store: JPEGs pass unchanged (decoded first when `verify`); other formats and
    CMYK JPEGs are re-encoded as RGB JPEG."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return LoadedImage(path, label, None, f"cannot read the file ({err.strerror or err})")
    reencode = not is_jpeg(data) or needs_rgb_reencode(data)
    problem = training_image_problem(data) if verify and not reencode else image_problem(data)
    if problem is not None:
        return LoadedImage(path, label, None, problem)
    try:
        jpeg = to_jpeg(data, reencode=True) if reencode else data
        return LoadedImage(path, label, jpeg, reencoded=reencode, size=image_size_of_bytes(jpeg))
    except Exception as err:  # PIL raises several types for corrupt data
        return LoadedImage(path, label, None, f"undecodable image ({type(err).__name__}: {str(err)[:60]})")


def _first_size(identities: list[tuple[str, list[Path]]], verify: bool, skip_bad: bool) -> tuple[int, int]:
    """Size of the first usable image (the size every image must have)."""
    for _, images in identities:
        for path in images:
            loaded = load_image(path, 0, verify)
            if loaded.size is not None:
                return loaded.size
            if not skip_bad:
                raise DataFormatError(f"{path} (record key 1): {loaded.problem} (--skip-bad skips such images)")
    raise DataFormatError(f"{identities[0][1][0].parent.parent}: no usable image (every image was bad)")


def pack_folder(root: str | Path, out_dir: str | Path, progress: bool = True, *, verify: bool = True,
                skip_bad: bool = False) -> PackSummary:
    """Write `out_dir/{train.rec, train.idx, property, identities.tsv}` from the image tree at `root`.

    An unusable image stops with its path and the record key it would get, or with `skip_bad` is left out
    and counted (its identity keeps its label).
    """
    identities = scan_folder(root)
    total = sum(len(images) for _, images in identities)
    image_size = _first_size(identities, verify, skip_bad)
    counts = {"reencoded": 0, "skipped": 0}

    def records(checker: ImageChecker) -> Iterator[tuple[int, bytes]]:
        labelled = ((label, path) for label, (_, images) in enumerate(identities) for path in images)
        key = 1
        with tqdm(total=total, unit="img", desc="pack", disable=not progress, mininterval=0.5) as bar:
            for image in checker.map(lambda item: load_image(item[1], item[0], verify), labelled):
                bar.update(1)
                if image.jpeg is None:
                    if skip_bad:
                        counts["skipped"] += 1
                        continue
                    raise DataFormatError(f"{image.path} (record key {key}): {image.problem} "
                                          "(--skip-bad skips such images)")
                counts["reencoded"] += image.reencoded
                size = image.size
                if size != image_size:
                    h, w = image_size
                    raise DataFormatError(f"{image.path}: image is {size[1]}x{size[0]}, the first image was "
                                          f"{w}x{h} (align faces to one size)")
                key += 1
                yield image.label, image.jpeg

    # the dataset's files appear together (property last), beside whatever else OUT_DIR holds
    with atomic_files(out_dir, (REC_NAME, IDX_NAME, IDENTITIES_NAME, PROPERTY_NAME)) as staging:
        with ImageChecker() as checker:
            write_insightface_dataset(staging, records(checker), len(identities), image_size)
        (staging / IDENTITIES_NAME).write_text(  # folder names byte for byte, even if not UTF-8
            "".join(f"{label}\t{name}\n" for label, (name, _) in enumerate(identities)), errors="surrogateescape")
    return PackSummary(total - counts["skipped"], len(identities), counts["reencoded"], image_size,
                       counts["skipped"])
