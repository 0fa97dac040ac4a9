"""Check OFRecord training parts before OneFlow reads them, whoever wrote them.

OneFlow's training pipeline ends the process on a record it cannot decode and names no record, so
every record is checked first: framing, the `encoded` + int32 `label` features OneFlow's decoders
expect, and the image itself (`image_verify.training_image_problem`, decoded in parallel). A part's
result is cached outside the data folder (`check_cache`, keyed on the part's identity and the crop
size), so a resumed or repeated run does not pay again; `faceflow convert rec` stores the result of
its own verification the same way. The same pass counts records and labels, which is what sizes a
training set that comes without `meta.json`.

On a bad record, `bad_images: fail` stops with one line naming the part file and record index;
`bad_images: skip` trains on a view folder in the cache whose parts are the originals (symlinks),
or cleaned copies of only the parts that hold bad records. OneFlow's reader also aborts on an empty
part (the port's converter leaves one when the images do not fill its last part): such parts are left
out of a view the same way, the others renumbered.
"""
from __future__ import annotations

import json
import mmap
import struct
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

from tqdm import tqdm

from faceflow.data import check_cache, ofrecord_proto
from faceflow.data.atomic import atomic_dir
from faceflow.data.image_verify import ImageChecker
from faceflow.data.ofrecord import META_NAME, part_files, part_name
from faceflow.data.record_policy import BAD_IMAGE_POLICIES
from faceflow.errors import DataFormatError, FaceflowError

DEFAULT_IMAGE_SIZE = 112
SCAN_KIND = "ofrecord-train-part-v1"
VIEW_KIND = "ofrecord-train-view-v1"
_LENGTH = struct.Struct("q")
_BATCH = 2048  # records decoded per parallel batch


@dataclass
class BadRecord:
    """A record of a part that OneFlow's training pipeline cannot read, and why."""

    index: int
    offset: int
    reason: str


@dataclass
class PartScan:
    """What one training part holds: record count, largest label (-1 if none) and the bad records."""

    records: int
    label_max: int
    bad: list[BadRecord] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PartScan":
        return cls(int(data["records"]), int(data["label_max"]), [BadRecord(**b) for b in data["bad"]])


def image_size_of(data_dir: str | Path) -> tuple[int, int]:
    """Image (height, width) the training crop uses: meta.json's `image_size` when the converter wrote one,
    else 112x112 (the size of InsightFace's aligned faces and of the OneFlow port's downloads)."""
    meta = read_meta(data_dir)
    size = meta.get("image_size")
    if isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return size[0], size[1]
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def read_meta(data_dir: str | Path) -> dict[str, Any]:
    """The converter's meta.json of an OFRecord folder, or {} when there is none (or it is unreadable)."""
    try:
        meta = json.loads((Path(data_dir) / META_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def record_spans(path: Path, data: mmap.mmap | bytes) -> Iterator[tuple[int, int]]:
    """(offset, length) of every record of a part; a framing error is fatal (nothing after it can be found)."""
    pos, size = 0, len(data)
    while pos < size:
        if pos + 8 > size:
            raise DataFormatError(f"{path}: byte offset {pos}: truncated length field (the part is cut short)")
        (length,) = _LENGTH.unpack_from(data, pos)
        if length < 0 or pos + 8 + length > size:
            raise DataFormatError(f"{path}: byte offset {pos}: record of {length} bytes runs past the end of the part")
        yield pos, length
        pos += 8 + length


def _record_fields(payload: bytes) -> tuple[bytes | None, int | None, str | None]:
    """(image, label, problem) of one serialized record, as OneFlow's image and int32 label decoders read it."""
    record = ofrecord_proto.OFRecord()
    try:
        record.ParseFromString(payload)
    except Exception:  # protobuf's DecodeError
        return None, None, "not an OFRecord message"
    features = record.feature
    if "encoded" not in features or features["encoded"].WhichOneof("kind") != "bytes_list" \
            or len(features["encoded"].bytes_list.value) != 1:
        return None, None, "no 'encoded' feature holding one image (bytes_list)"
    if "label" not in features or features["label"].WhichOneof("kind") != "int32_list" \
            or len(features["label"].int32_list.value) != 1:
        return None, None, "no 'label' feature holding one int32 (int32_list)"
    label = int(features["label"].int32_list.value[0])
    if label < 0:
        return None, None, f"label {label} is negative"
    return features["encoded"].bytes_list.value[0], label, None


def scan_part(path: Path, crop: tuple[int, int], checker: ImageChecker, bar: tqdm | None = None) -> PartScan:
    """Check every record of one part (images decoded in parallel by `checker`)."""
    scan = PartScan(0, -1)
    with open(path, "rb") as f:
        if path.stat().st_size == 0:
            return scan
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            spans = enumerate(record_spans(path, data))
            while batch := list(islice(spans, _BATCH)):  # streamed: nothing per record is kept but the bad ones
                images, where = [], []
                for index, (offset, length) in batch:
                    image, label, problem = _record_fields(data[offset + 8:offset + 8 + length])
                    if problem is not None:
                        scan.bad.append(BadRecord(index, offset, problem))
                        continue
                    images.append(image)
                    where.append((index, offset))
                    scan.label_max = max(scan.label_max, label)
                for (index, offset), problem in zip(where, checker.problems(images, crop)):
                    if problem is not None:
                        scan.bad.append(BadRecord(index, offset, problem))
                scan.records += len(batch)
                if bar is not None:
                    bar.update(len(batch))
    scan.bad.sort(key=lambda bad: bad.index)
    return scan


def _scan_material(path: Path, crop: tuple[int, int]) -> dict[str, Any]:
    return {**check_cache.file_identity(path), "crop": list(crop)}


def store_scan(path: Path, crop: tuple[int, int], scan: PartScan) -> None:
    """Cache the result of checking `path` (also called by the converter, which verified what it wrote)."""
    check_cache.store(SCAN_KIND, _scan_material(path, crop), asdict(scan))


def cached_scan(path: Path, crop: tuple[int, int]) -> PartScan | None:
    """The cached check of this version of `path`, if any."""
    cached = check_cache.load(SCAN_KIND, _scan_material(path, crop))
    try:
        return PartScan.from_json(cached) if cached is not None else None
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class TrainData:
    """A checked training folder: what OneFlow should read and what it holds."""

    data_dir: Path
    read_dir: Path  # data_dir, or a view in the cache with the bad records left out
    parts: list[Path]
    image_size: tuple[int, int]
    records: int  # records OneFlow will read (bad ones excluded)
    label_max: int
    skipped: list[tuple[Path, BadRecord]]
    checked: int  # records decoded by this call (0 when every part's check was cached)
    left_out: list[Path] = field(default_factory=list)  # parts with nothing to read (empty, or every record bad)

    def counts(self) -> tuple[int, int]:
        """(num_classes, num_images): classes from meta.json when the converter recorded them, else labels."""
        classes = read_meta(self.data_dir).get("classes")
        classes = classes if isinstance(classes, int) and classes > self.label_max else self.label_max + 1
        return classes, self.records

    def log_lines(self) -> list[str]:
        """Train-log lines counting skipped records and left-out parts (none when OneFlow reads the data as is)."""
        lines = []
        if self.skipped:
            parts = sorted({path.name for path, _ in self.skipped})
            examples = "; ".join(f"{path.name} record {bad.index}: {bad.reason}" for path, bad in self.skipped[:3])
            lines.append(f"bad_images: skip: {len(self.skipped)} unreadable training record(s) skipped in "
                         f"{len(parts)} of {len(self.parts)} parts of {self.data_dir} "
                         f"({examples}{'; ...' if len(self.skipped) > 3 else ''})")
        if self.left_out:
            lines.append(f"note: {len(self.left_out)} part(s) of {self.data_dir} with no readable record left out "
                         f"({', '.join(p.name for p in self.left_out[:3])}{', ...' if len(self.left_out) > 3 else ''}"
                         "; OneFlow's reader cannot read an empty part)")
        if self.read_dir != self.data_dir:
            lines.append(f"training reads {len(self.parts) - len(self.left_out)} parts through {self.read_dir}")
        return lines


def _fail_message(data: TrainData) -> str:
    path, bad = data.skipped[0]
    more = f" ({len(data.skipped) - 1} more bad record(s))" if len(data.skipped) > 1 else ""
    return (f"{path}: record {bad.index} (byte offset {bad.offset}): {bad.reason}{more}; "
            f"set bad_images: skip to train without such records")


def _write_view(data: TrainData, scans: list[PartScan], view: Path) -> None:
    """The view folder: the parts with something to read, renumbered; each a symlink to the original, or a
    cleaned copy without its bad records."""
    kept = [(path, scan) for path, scan in zip(data.parts, scans) if path not in data.left_out]
    with atomic_dir(view) as tmp:
        for i, (path, scan) in enumerate(kept):
            target = tmp / part_name(i)
            if not scan.bad:
                target.symlink_to(path.resolve())
                continue
            drop = {bad.index for bad in scan.bad}
            with open(path, "rb") as f, open(target, "wb") as out:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    for index, (offset, length) in enumerate(record_spans(path, mapped)):
                        if index not in drop:
                            out.write(mapped[offset:offset + 8 + length])
        (tmp / META_NAME).write_text(json.dumps({"source": str(data.data_dir), "image_size": list(data.image_size),
                                                 "records": data.records}) + "\n")


def verify_train_parts(data_dir: str | Path, bad_images: str = "fail", progress: bool = False,
                       announce: Callable[[str], None] | None = None) -> TrainData:
    """Check (or recall the cached check of) every part of a training folder; raise or prepare the skip view.

    `announce` receives one line before parts are decoded (not when every result is cached).
    """
    if bad_images not in BAD_IMAGE_POLICIES:
        raise ValueError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
    data_dir = Path(data_dir)
    parts = part_files(data_dir)
    crop = image_size_of(data_dir)
    scans: list[PartScan | None] = [cached_scan(path, crop) for path in parts]
    todo = [i for i, scan in enumerate(scans) if scan is None]
    checked = 0
    if todo and announce is not None:
        announce(f"checking every record of {len(todo)} of {len(parts)} part(s) of {data_dir} before OneFlow reads "
                 f"them (once: the result is cached in {check_cache.cache_root()})")
    if todo:
        with ImageChecker() as checker, tqdm(unit="img", desc=f"check {data_dir.name}", disable=not progress,
                                             mininterval=1.0) as bar:
            for i in todo:
                scans[i] = scan_part(parts[i], crop, checker, bar)
                store_scan(parts[i], crop, scans[i])
                checked += scans[i].records
    done = [scan for scan in scans if scan is not None]
    skipped = [(path, bad) for path, scan in zip(parts, done) for bad in scan.bad]
    data = TrainData(data_dir, data_dir, parts, crop, sum(s.records for s in done) - len(skipped),
                     max(s.label_max for s in done), skipped, checked,
                     [path for path, scan in zip(parts, done) if scan.records == len(scan.bad)])
    if skipped and bad_images == "fail":
        raise DataFormatError(_fail_message(data))
    if not skipped and not data.left_out:
        return data
    if len(data.left_out) == len(parts):
        raise DataFormatError(f"{data_dir}: no readable training record in {len(parts)} part(s)")
    material = {"parts": [check_cache.file_identity(p) for p in parts], "crop": list(crop)}
    data.read_dir = check_cache.cache_root() / "train-views" / check_cache.cache_key(VIEW_KIND, material)
    if not (data.read_dir / META_NAME).is_file():
        try:
            _write_view(data, done, data.read_dir)
        except OSError as err:
            raise FaceflowError(f"{data.read_dir}: cannot write the cleaned training parts (bad_images: skip): "
                                f"{err.strerror or err}") from None
    return data
