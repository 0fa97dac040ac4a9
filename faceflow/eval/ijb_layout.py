"""Reader of the IJB-B / IJB-C release layout as InsightFace redistributes it (REFERENCE section 11).

    IJB_DIR/loose_crop/<image>                       unaligned face crops
    IJB_DIR/meta/{p}_face_tid_mid.txt                image_name template_id media_id
    IJB_DIR/meta/{p}_name_5pts_score.txt             image_name x1 y1 ... x5 y5 detector_score (same order)
    IJB_DIR/meta/{p}_template_pair_label.txt         template1 template2 label (1 = same person)
    IJB_DIR/meta/{p}_1N_probe_mixed.csv, galleries   TEMPLATE_ID,SUBJECT_ID,FILENAME,... (optional, 1:N)

with p = ijbc or ijbb. IJB_DIR may also be the folder holding IJBC/ and IJBB/. Every malformed line is a
DataFormatError naming the file and line; nothing is read outside IJB_DIR.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from faceflow.errors import DataFormatError
from faceflow.eval.ijb_names import TARGETS, TargetFiles


LANDMARK_FIELDS = 12  # name, 10 coordinates, score


@dataclass
class TemplateSet:
    """Templates of one 1:N list (a gallery or the probes), each with its subject id, in file order."""

    templates: np.ndarray
    subjects: np.ndarray


@dataclass
class IJBLayout:
    """One benchmark's meta data, checked: images (crop paths, landmarks, scores, template and media ids),
    1:1 template pairs and, when the files are there, the 1:N probe and gallery template sets."""

    root: Path
    target: str
    images: list[Path]
    landmarks_path: Path
    landmark_lines: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    templates: np.ndarray
    medias: np.ndarray
    pairs: np.ndarray
    labels: np.ndarray
    probes: TemplateSet | None = None
    galleries: dict[str, TemplateSet] | None = None


def target_files(target: str) -> TargetFiles:
    """The file names of `target` (IJBC or IJBB); DataFormatError for another name."""
    if target not in TARGETS:
        raise DataFormatError(f"--target: expected one of {', '.join(TARGETS)}, got {target!r}")
    return TARGETS[target]


def benchmark_root(ijb_dir: str | Path, target: str) -> Path:
    """The folder holding loose_crop/ and meta/: IJB_DIR itself, or IJB_DIR/<target>."""
    ijb_dir = Path(ijb_dir)
    if not (ijb_dir / "meta").is_dir() and (ijb_dir / target / "meta").is_dir():
        return ijb_dir / target
    return ijb_dir


def _meta(root: Path, name: str) -> Path:
    path = root / "meta" / name
    if not path.is_file():
        raise DataFormatError(f"{path}: missing (IJB meta file)")
    return path


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, whitespace-separated fields) of every non-blank line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    return [(number, line.split()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _number(text: str, kind: type, path: Path, line: int) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise DataFormatError(f"{path}:{line}: not {what}: {text[:40]!r}") from None
    if kind is float and not np.isfinite(value):
        raise DataFormatError(f"{path}:{line}: not a finite number: {text[:40]!r}")
    return value


def _crop_path(root: Path, name: str, path: Path, line: int) -> Path:
    """loose_crop/<name>, refusing names that would leave that folder."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise DataFormatError(f"{path}:{line}: image name {name[:60]!r} leaves loose_crop/")
    return root / "loose_crop" / pure


def _read_faces(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    names, templates, medias = [], [], []
    for line, fields in _lines(path):
        if len(fields) != 3:
            raise DataFormatError(f"{path}:{line}: expected image_name template_id media_id, got {len(fields)} fields")
        names.append(fields[0])
        templates.append(_number(fields[1], int, path, line))
        medias.append(_number(fields[2], int, path, line))
    return names, np.asarray(templates, np.int64), np.asarray(medias, np.int64)


def _read_landmarks(path: Path, names: list[str], faces_path: Path, root: Path
                    ) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """Crop paths, their line numbers, (N, 5, 2) landmarks and (N,) detector scores, checked against the face
    list's names."""
    rows = _lines(path)
    if len(rows) != len(names):
        raise DataFormatError(f"{path}: {len(rows)} images, {faces_path.name} lists {len(names)} "
                              "(same images, same order)")
    values = np.empty((len(rows), LANDMARK_FIELDS - 1), np.float32)
    images = []
    for index, ((line, fields), name) in enumerate(zip(rows, names)):
        if len(fields) != LANDMARK_FIELDS:
            raise DataFormatError(f"{path}:{line}: expected image name, 10 landmark coordinates and a detector "
                                  f"score ({LANDMARK_FIELDS} fields), got {len(fields)}")
        if fields[0] != name:
            raise DataFormatError(f"{path}:{line}: image {fields[0][:60]!r}, but line {index + 1} of "
                                  f"{faces_path.name} is {name[:60]!r} (same images, same order)")
        try:
            values[index] = np.asarray(fields[1:], dtype=np.float64)
        except ValueError:
            values[index] = [_number(text, float, path, line) for text in fields[1:]]
        if not np.isfinite(values[index]).all():
            raise DataFormatError(f"{path}:{line}: landmarks and score must be finite numbers")
        images.append(_crop_path(root, name, path, line))
    lines = np.array([line for line, _ in rows], np.int64)
    return images, lines, values[:, :10].reshape(-1, 5, 2), values[:, 10].copy()


def _first_bad_pair_line(path: Path) -> DataFormatError:
    """The error of the first malformed line of a pair file (the slow scan behind the fast parser)."""
    for line, fields in _lines(path):
        if len(fields) != 3:
            return DataFormatError(f"{path}:{line}: expected template1 template2 label, got {len(fields)} fields")
        for text in fields:
            _number(text, int, path, line)
    return DataFormatError(f"{path}: cannot parse as three integer columns")


def _read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) template ids and (P,) labels; parsed by pandas (IJB-C has 15.7M lines), errors by a line scan."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.int64, engine="c", skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: no template pairs") from None
    except (ValueError, pd.errors.ParserError):
        raise _first_bad_pair_line(path) from None
    if table.shape[1] != 3:
        raise _first_bad_pair_line(path)
    values = table.to_numpy()
    labels = values[:, 2]
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if len(bad):
        raise DataFormatError(f"{path}:{_line_of_row(path, int(bad[0]))}: label must be 0 or 1, got {labels[bad[0]]}")
    return values[:, :2].copy(), labels.astype(np.int8)


def _line_of_row(path: Path, row: int) -> int:
    """1-based line number of data row `row` (blank lines skipped)."""
    return _lines(path)[row][0]


def _check_known(path: Path, templates: np.ndarray, known: np.ndarray, faces_path: Path,
                 lines: list[int] | None) -> None:
    """Every template id of `templates` has images (is in `known`, sorted), else an error naming its line."""
    missing = np.flatnonzero(~np.isin(templates, known))
    if len(missing):
        row = int(missing[0])
        data_row = row // templates.shape[1] if templates.ndim > 1 else row
        line = lines[row] if lines is not None else _line_of_row(path, data_row)
        raise DataFormatError(f"{path}:{line}: template {templates.flat[row]} has no images in {faces_path.name}")


def _read_template_set(path: Path) -> tuple[TemplateSet, list[int]]:
    """Unique templates of a 1:N csv (first column template, second subject; header line), one subject each."""
    subjects: dict[int, int] = {}
    lines: dict[int, int] = {}
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataFormatError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    for line, row in enumerate(rows[1:], 2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise DataFormatError(f"{path}:{line}: expected TEMPLATE_ID,SUBJECT_ID,..., got {len(row)} fields")
        template = _number(row[0].strip(), int, path, line)
        subject = _number(row[1].strip(), int, path, line)
        if subjects.setdefault(template, subject) != subject:
            raise DataFormatError(f"{path}:{line}: template {template} has subject {subject}, "
                                  f"line {lines[template]} says {subjects[template]}")
        lines.setdefault(template, line)
    if not subjects:
        raise DataFormatError(f"{path}: no templates")
    templates = np.fromiter(subjects, np.int64, len(subjects))
    return TemplateSet(templates, np.fromiter(subjects.values(), np.int64, len(subjects))), [lines[t] for t in subjects]


def _read_identification(root: Path, files: TargetFiles, known: np.ndarray, faces_path: Path
                         ) -> tuple[TemplateSet | None, dict[str, TemplateSet] | None]:
    """The 1:N probe and gallery sets when all their files are present, else (None, None)."""
    names = [files.probe] + [files.gallery_file(g) for g in files.galleries]
    if not all((root / "meta" / name).is_file() for name in names):
        return None, None
    sets = []
    for index, name in enumerate(names):
        path = root / "meta" / name
        template_set, lines = _read_template_set(path)
        _check_known(path, template_set.templates, known, faces_path, lines)
        if index:  # a gallery: one template per subject
            _, first = np.unique(template_set.subjects, return_index=True)
            if len(first) != len(template_set.subjects):
                repeated = int(np.setdiff1d(np.arange(len(template_set.subjects)), first)[0])
                raise DataFormatError(f"{path}:{lines[repeated]}: subject {template_set.subjects[repeated]} has a "
                                      f"second gallery template ({template_set.templates[repeated]}; one per subject)")
        sets.append(template_set)
    return sets[0], dict(zip(files.galleries, sets[1:]))


def read_layout(ijb_dir: str | Path, target: str) -> IJBLayout:
    """Read and check one benchmark's meta files (see the module doc)."""
    files = target_files(target)
    root = benchmark_root(ijb_dir, target)
    if not (root / "loose_crop").is_dir():
        raise DataFormatError(f"{root / 'loose_crop'}: missing (the folder of IJB face crops)")
    faces_path = _meta(root, files.faces)
    landmarks_path = _meta(root, files.landmarks)
    pairs_path = _meta(root, files.pairs)
    names, templates, medias = _read_faces(faces_path)
    if not names:
        raise DataFormatError(f"{faces_path}: no images")
    images, lines, landmarks, scores = _read_landmarks(landmarks_path, names, faces_path, root)
    pairs, labels = _read_pairs(pairs_path)
    known = np.unique(templates)
    _check_known(pairs_path, pairs, known, faces_path, None)
    probes, galleries = _read_identification(root, files, known, faces_path)
    return IJBLayout(root, target, images, landmarks_path, lines, landmarks, scores, templates, medias, pairs, labels,
                     probes, galleries)
