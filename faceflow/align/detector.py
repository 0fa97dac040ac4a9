"""Offline face detection with 5 landmarks from MediaPipe's packaged models (no download at run time).

MediaPipe's full-range face detector finds the faces (box and score); its face mesh (468 points plus iris
centres), run on a square window around one face, gives the five InsightFace points: the iris centres, the
nose tip and the mouth corners. Mesh indices follow MediaPipe's canonical face model, in which the subject's
right side (mesh 468, 61) appears on the image's left in an ordinary, unmirrored photo.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

from faceflow.errors import FaceflowError

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.9"
# left eye, right eye, nose tip, left mouth corner, right mouth corner (as seen in the image)
MESH_INDICES = (468, 473, 1, 61, 291)
MESH_WINDOW = 256  # pixels of the square the mesh runs on
WINDOW_SCALE = 2.0  # window side / longer side of the detector's box


@dataclass(frozen=True)
class FaceBox:
    """One detected face: box corners in image pixels and the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def area(self) -> float:
        """Box area in square pixels (what "the largest face" compares)."""
        return max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)


def _import_mediapipe():
    """The mediapipe module (quiet C++ logging), or a FaceflowError saying how to install it."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import mediapipe
    except ImportError as err:
        raise FaceflowError(f"face detection needs MediaPipe ({MEDIAPIPE_REQUIREMENT}): {err}") from None
    return mediapipe


class FaceDetector:
    """Faces and their 5 landmarks in RGB uint8 images; holds MediaPipe's graphs open (use as a context manager)."""

    def __init__(self, min_score: float = 0.5) -> None:
        solutions = _import_mediapipe().solutions
        self._detection = solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
        self._mesh = solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                  min_detection_confidence=0.3)

    def faces(self, image: np.ndarray) -> list[FaceBox]:
        """Every face the detector finds in `image` (H x W x 3 RGB uint8), best score first."""
        height, width = image.shape[:2]
        result = self._detection.process(np.ascontiguousarray(image))
        boxes = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            x0, y0 = rel.xmin * width, rel.ymin * height
            boxes.append(FaceBox(x0, y0, x0 + rel.width * width, y0 + rel.height * height, float(detection.score[0])))
        return sorted(boxes, key=lambda box: -box.score)

    def landmarks(self, image: np.ndarray, box: FaceBox) -> np.ndarray | None:
        """The 5 landmarks (5, 2) of the face in `box`, in image pixels; None when the mesh finds no face there."""
        side = WINDOW_SCALE * max(box.x1 - box.x0, box.y1 - box.y0, 1.0)
        scale = MESH_WINDOW / side
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        to_window = np.array([[scale, 0, MESH_WINDOW / 2 - scale * cx], [0, scale, MESH_WINDOW / 2 - scale * cy]])
        window = cv2.warpAffine(image, to_window, (MESH_WINDOW, MESH_WINDOW), flags=cv2.INTER_LINEAR, borderValue=0.0)
        result = self._mesh.process(window)
        if not result.multi_face_landmarks:
            return None
        mesh = result.multi_face_landmarks[0].landmark
        points = np.array([[mesh[i].x * MESH_WINDOW, mesh[i].y * MESH_WINDOW] for i in MESH_INDICES])
        return (points - to_window[:, 2]) / scale

    def close(self) -> None:
        """Release MediaPipe's graphs."""
        self._detection.close()
        self._mesh.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
