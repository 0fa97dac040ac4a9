"""5-point alignment: closed forms, insightface's own norm_crop, MediaPipe landmarks on a real photo, the CLI."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from faceflow.align.detector import FaceDetector
from faceflow.align.folder import LOG_NAME
from faceflow.align.similarity import ARCFACE_TEMPLATE, CROP_SIZE, estimate_norm, norm_crop, transform_points
from faceflow.cli.main import main as faceflow_main
from faceflow.data.recordio import read_property
from faceflow.errors import DataFormatError
from insightface_reference import ensure_insightface, norm_crop_reference

# scikit-image's astronaut (Eileen Collins, 512 x 512 RGB), measured by hand once: the face region was viewed
# enlarged 11x with a 2-pixel grid, and each point read as the centre of the iris (eyes), the bright tip of the
# nose and the point where the lips meet (mouth corners). Order: left eye, right eye, nose, left / right mouth
# corner as seen in the image; (x, y) pixels.
ASTRONAUT_LANDMARKS = np.array([[203.5, 100.5], [246.0, 103.0], [223.0, 127.5], [204.0, 140.5], [242.5, 141.5]])
TOLERANCE_PX = 4.0  # the interocular distance is about 43 px


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


@pytest.mark.parametrize("scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (2.5, 0.3, 40.0, -12.0), (0.6, -2.0, 300.0, 80.0)])
def test_a_known_similarity_of_the_template_is_recovered_exactly(scale, angle, tx, ty) -> None:
    to_image = _similarity(scale, angle, tx, ty)
    landmarks = transform_points(ARCFACE_TEMPLATE, to_image)
    matrix = estimate_norm(landmarks)
    # estimated in float32, as InsightFace does
    np.testing.assert_allclose(matrix, _invert(to_image), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(transform_points(landmarks, matrix), ARCFACE_TEMPLATE, atol=1e-4)


def test_integer_shifts_and_quarter_turns_crop_exact_pixels() -> None:
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    shifted = norm_crop(image, ARCFACE_TEMPLATE.astype(np.float64) + [37, 121])
    assert np.array_equal(shifted, image[121:121 + CROP_SIZE, 37:37 + CROP_SIZE])
    # the face turned by 90 degrees clockwise in the image: landmarks are the template rotated about (0, 0) then moved
    quarter = _similarity(1.0, np.pi / 2, 250.0, 20.0)
    crop = norm_crop(image, transform_points(ARCFACE_TEMPLATE, quarter))
    # crop(x, y) = image(250 - y, 20 + x)
    expected = np.stack([image[20 + x, 250 - np.arange(CROP_SIZE)] for x in range(CROP_SIZE)], axis=1)
    assert np.array_equal(crop, expected)
    # outside the image the crop is black (borderValue 0)
    corner = norm_crop(image, ARCFACE_TEMPLATE.astype(np.float64) - 60)
    assert not corner[:50, :50].any() and corner[70:, 70:].any()


def test_bad_landmarks_name_their_source() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(DataFormatError, match=r"^crop\.jpg: expected 5 landmarks"):
        norm_crop(image, np.zeros((4, 2)), "crop.jpg")
    with pytest.raises(DataFormatError, match="degenerate"):
        norm_crop(image, np.full((5, 2), 3.0), "crop.jpg")
    with pytest.raises(DataFormatError, match="not finite"):
        norm_crop(image, np.full((5, 2), np.nan), "crop.jpg")


# slow: the first run builds insightface 0.7.3 into ~/.cache/faceflow-tests (a few minutes); later runs take seconds
@pytest.mark.slow
def test_matches_insightface_norm_crop(tmp_path: Path) -> None:
    python, why = ensure_insightface()
    if python is None:
        pytest.skip(why)
    image = skdata.astronaut()
    rng = np.random.default_rng(1)
    sets = [ASTRONAUT_LANDMARKS]
    for _ in range(7):  # random similarities of the measured points plus landmark noise
        matrix = _similarity(rng.uniform(0.5, 2.0), rng.uniform(-0.6, 0.6), 0, 0)
        centre = ASTRONAUT_LANDMARKS.mean(axis=0)
        points = transform_points(ASTRONAUT_LANDMARKS - centre, matrix) + centre + rng.uniform(-30, 30, 2)
        sets.append(points + rng.normal(0, 2.0, points.shape))
    sets = np.stack(sets)
    reference = norm_crop_reference(python, image, sets, tmp_path)
    ours = np.stack([norm_crop(image, points) for points in sets])
    assert reference.shape == ours.shape == (len(sets), CROP_SIZE, CROP_SIZE, 3)
    diff = np.abs(reference.astype(int) - ours.astype(int))
    assert diff.max() <= 1, f"max grey-level difference {diff.max()}"


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as found:
        yield found


def test_mediapipe_landmarks_on_the_astronaut_and_its_aligned_crop(detector: FaceDetector) -> None:
    image = skdata.astronaut()
    faces = detector.faces(image)
    assert len(faces) == 1 and faces[0].score > 0.8
    landmarks = detector.landmarks(image, faces[0])
    errors = np.linalg.norm(landmarks - ASTRONAUT_LANDMARKS, axis=1)
    assert errors.max() < TOLERANCE_PX, errors
    # the crop is aligned: detected again (on a padded canvas), its landmarks are where the transform sent them,
    # and near the template (within the fit residual of this broadly smiling face: eyes 2-3 px, nose and mouth 7)
    matrix = estimate_norm(landmarks)
    canvas = np.zeros((2 * CROP_SIZE, 2 * CROP_SIZE, 3), np.uint8)
    canvas[56:56 + CROP_SIZE, 56:56 + CROP_SIZE] = norm_crop(image, landmarks)
    again = detector.faces(canvas)
    assert len(again) == 1
    in_crop = detector.landmarks(canvas, again[0]) - 56
    assert np.linalg.norm(in_crop - transform_points(landmarks, matrix), axis=1).max() < 1.0
    to_template = np.linalg.norm(in_crop - ARCFACE_TEMPLATE, axis=1)
    assert to_template[:2].max() < TOLERANCE_PX and to_template.max() < 2 * TOLERANCE_PX, to_template


def _raw_tree(root: Path) -> dict[str, Path]:
    astronaut = skdata.astronaut()
    files = {
        "alice/one.jpg": astronaut,
        "alice/one.png": astronaut[:, ::-1],
        "alice/two_faces.jpg": np.concatenate([astronaut, astronaut[:, ::-1]], axis=1),
        "bob/blank.png": np.full((200, 200, 3), 128, np.uint8),
        "bob/small.jpg": cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA),
        "carol/nothing.png": np.zeros((64, 64, 3), np.uint8),
    }
    paths = {}
    for name, pixels in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=95)
        paths[name] = path
    (root / "bob" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    return paths


def _log(out: Path) -> dict[str, str]:
    lines = (out / LOG_NAME).read_text().splitlines()
    assert lines[0] == "path\treason\tdetail"
    return {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in lines[1:]}


def test_align_folder_skips_and_logs_then_packs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _raw_tree(tmp_path / "raw")
    out = tmp_path / "aligned"
    assert faceflow_main(["align", str(tmp_path / "raw"), str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "3 crops of 2 identities, 2 no face, 1 multiple faces, 1 unreadable" in captured.out
    assert "broken.jpg: truncated JPEG" in captured.err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "alice/one.jpg.jpg", "alice/one.png.jpg", "bob/small.jpg"], "clashing stems keep their whole name"
    assert _log(out) == {"two_faces.jpg": "multiple_faces", "blank.png": "no_face", "nothing.png": "no_face",
                         "broken.jpg": "unreadable"}
    crop = np.asarray(Image.open(out / "alice" / "one.jpg.jpg"))
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    mirrored = np.asarray(Image.open(out / "alice" / "one.png.jpg"))
    assert np.abs(crop.astype(int) - mirrored[:, ::-1].astype(int)).mean() < 12, "a mirrored photo gives the mirrored crop"

    # the largest of several faces, by option; the earlier output is replaced
    assert faceflow_main(["align", str(tmp_path / "raw"), str(out), "--quiet", "--multiple", "largest"]) == 0
    assert "4 crops of 2 identities, 2 no face, 1 unreadable, largest of several faces taken in 1" in capsys.readouterr().out
    assert (out / "alice" / "two_faces.jpg").is_file()
    assert faceflow_main(["pack", str(out), str(tmp_path / "packed"), "--quiet"]) == 0
    assert read_property(tmp_path / "packed") == (2, CROP_SIZE, CROP_SIZE)


def test_align_refuses_a_foreign_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "raw" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "raw" / "a" / "x.png")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    assert faceflow_main(["align", str(tmp_path / "raw"), str(tmp_path / "mine"), "--quiet"]) == 1
    assert "not a `faceflow align` output" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
    assert faceflow_main(["align", str(tmp_path / "raw"), str(tmp_path / "new"), "--min-score", "1.5"]) == 1
    assert "--min-score: expected a detector score in (0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
