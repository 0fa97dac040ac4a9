"""The ArcFace 112x112 template and `norm_crop` (REFERENCE section 10): a least-squares similarity transform
from 5 landmarks to the template (scikit-image), applied with OpenCV's `warpAffine` (black border).

Landmark order: left eye, right eye, nose tip, left mouth corner, right mouth corner, left/right as seen in
the image; (x, y) in pixels of the source image.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from faceflow.errors import DataFormatError

CROP_SIZE = 112
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def _landmarks(landmarks: np.ndarray, source: str) -> np.ndarray:
    """`landmarks` as a finite (5, 2) float32 array (the precision InsightFace estimates in, so the warp matches
    it pixel for pixel), else DataFormatError naming `source`."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape != (len(LANDMARK_NAMES), 2):
        raise DataFormatError(f"{source}: expected 5 landmarks (x, y), got shape {points.shape}")
    if not np.isfinite(points).all():
        raise DataFormatError(f"{source}: landmarks are not finite numbers")
    return points


def estimate_norm(landmarks: np.ndarray, source: str = "landmarks") -> np.ndarray:
    """The 2x3 matrix mapping image pixels to the 112x112 crop that puts `landmarks` on the ArcFace template."""
    points = _landmarks(landmarks, source)
    transform = SimilarityTransform()
    if not transform.estimate(points, ARCFACE_TEMPLATE) or not np.isfinite(transform.params).all():
        raise DataFormatError(f"{source}: landmarks are degenerate (no similarity transform fits them)")
    if transform.scale <= 0:
        raise DataFormatError(f"{source}: landmarks are degenerate (all at one point)")
    return transform.params[:2].copy()


def norm_crop(image: np.ndarray, landmarks: np.ndarray, source: str = "landmarks") -> np.ndarray:
    """The aligned 112x112 crop of `image` (H x W or H x W x C uint8, any channel order kept)."""
    matrix = estimate_norm(landmarks, source)
    return cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), borderValue=0.0)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by a 2x3 affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]
