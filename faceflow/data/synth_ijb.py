"""The synthetic IJB-style benchmarks `faceflow synth` writes to `ijb/IJBC` and `ijb/IJBB`, in the released
layout (`faceflow.eval.ijb_layout`), on identities disjoint from training and from the verification sets.

Each identity has TEMPLATES_PER_IDENTITY templates; a template holds 1-3 media (independent sightings), a
media 1-3 frames (the same sighting with small pose jitter, as video frames). Every image is a loose,
unaligned crop: the face at a random offset, rotation and scale inside a wider canvas, which is then resized
(the crops differ in resolution), with its true 5 landmarks and a detector-like score that falls with pose,
occlusion and blur. 1:1 pairs are all template pairs; for 1:N the first template of each identity forms the
gallery of one half of the identities (G1/S1) or the other (G2/S2), the other templates are the probes.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageFilter

from faceflow.data.synth_faces import face_landmarks, render_faces, sample_nuisance, stack_identities
from faceflow.eval.ijb_names import TARGETS

TEMPLATES_PER_IDENTITY = 3
CANVAS = 144          # loose crop before resizing, in pixels of the 112 x 112 training frame
CANVAS_RES = 82       # drawing grid of the canvas (the training images' 64 per 112 pixels)
RESIZE = (0.6, 1.5)   # loose crops are resized by this factor range (86 to 216 pixels)
JPEG_QUALITY = 90
_IJB_STREAM = 5
_TARGET_STREAMS = {name: index for index, name in enumerate(TARGETS)}


@dataclass
class IJBPlan:
    """The structure of one synthetic benchmark: per image its identity, template, media and frame."""

    identities: np.ndarray   # the identity id of each subject (subject index = position)
    image_subject: np.ndarray
    image_template: np.ndarray
    image_media: np.ndarray
    template_subject: np.ndarray


def plan_benchmark(identities: np.ndarray, rng: np.random.Generator) -> IJBPlan:
    """Templates of 1-3 media, media of 1-3 frames (60 % single images), for every identity."""
    subjects, templates, medias = [], [], []
    template_subject = []
    media = 0
    for subject in range(len(identities)):
        for _ in range(TEMPLATES_PER_IDENTITY):
            template = len(template_subject)
            template_subject.append(subject)
            for _ in range(int(rng.integers(1, 4))):
                frames = 1 if rng.uniform() < 0.6 else int(rng.integers(2, 4))
                subjects += [subject] * frames
                templates += [template] * frames
                medias += [media] * frames
                media += 1
    return IJBPlan(np.asarray(identities), np.asarray(subjects), np.asarray(templates), np.asarray(medias),
                   np.asarray(template_subject))


def _nuisance(plan: IJBPlan, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per image nuisance: one draw per media (wider offset, rotation and scale than training), small
    per-frame jitter of pose and expression."""
    n_media = int(plan.image_media.max()) + 1
    media = sample_nuisance(rng, n_media, profile="mixed", age=(0.0, 0.7))
    media["tx"], media["ty"] = rng.uniform(-14, 14, n_media), rng.uniform(-14, 14, n_media)
    media["rot"] = np.clip(rng.normal(0, 0.25, n_media), -0.6, 0.6)
    media["scale"] = rng.uniform(0.8, 1.2, n_media)
    n = len(plan.image_media)
    nuis = {key: value[plan.image_media] for key, value in media.items()}
    first_frame = np.r_[True, plan.image_media[1:] != plan.image_media[:-1]]
    jitter = {"tx": 1.5, "ty": 1.5, "rot": 0.04, "yaw": 0.06, "smile": 0.01}
    for key, spread in jitter.items():
        nuis[key] = nuis[key] + np.where(first_frame, 0.0, rng.normal(0, spread, n))
    return {key: np.asarray(value, np.float32) for key, value in nuis.items()}


def detector_scores(nuis: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A RetinaFace-like confidence: near 1 for clear frontal faces, lower with yaw, occlusion and blur."""
    score = (0.995 - 0.45 * np.clip(np.abs(nuis["yaw"]) - 0.3, 0, None) - 0.12 * (nuis["occ_kind"] > 0)
             - 0.06 * nuis["blur"] + rng.normal(0, 0.01, len(nuis["yaw"])))
    return np.clip(score, 0.3, 0.999).astype(np.float32)


def _encode(image: np.ndarray, factor: float, blur: float) -> tuple[bytes, float]:
    """The canvas blurred, resized by `factor` (JPEG bytes), and the exact scale of its pixel grid."""
    size = max(int(round(CANVAS * factor)), 32)
    pil = Image.fromarray(image)
    if blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(float(blur)))
    pil = pil.resize((size, size), Image.BICUBIC if size > CANVAS else Image.LANCZOS)
    out = io.BytesIO()
    pil.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), size / CANVAS


@dataclass
class RenderJob:
    """One batch of loose crops to draw: identity parameters and nuisance per image, resize factors and the
    key of the batch's own random stream (sensor noise), so batches draw the same bytes in any process."""

    params: list[dict[str, np.ndarray]]
    nuis: dict[str, np.ndarray]
    factors: np.ndarray
    stream: list[int]


def render_batch(job: RenderJob) -> tuple[list[bytes], np.ndarray]:
    """JPEG loose crops of one batch and their (B, 5, 2) landmarks in crop pixels."""
    ident = stack_identities(job.params)
    canvases = render_faces(ident, job.nuis, np.random.default_rng(job.stream), res=CANVAS_RES, size=CANVAS)
    points = face_landmarks(ident, job.nuis, size=CANVAS)
    images = []
    for index, (canvas, factor, blur) in enumerate(zip(canvases, job.factors, job.nuis["blur"])):
        data, scale = _encode(canvas, float(factor), float(blur))
        images.append(data)
        points[index] = (points[index] + 0.5) * scale - 0.5
    return images, points


def render_jobs(plan: IJBPlan, identity_params: Callable[[int], dict[str, np.ndarray]], rng: np.random.Generator,
                stream: list[int], batch: int = 64) -> tuple[list[RenderJob], np.ndarray]:
    """The render jobs of a benchmark (nuisance drawn from `rng` in one go) and its detector scores."""
    nuis = _nuisance(plan, rng)
    scores = detector_scores(nuis, rng)
    factors = rng.uniform(*RESIZE, len(plan.image_media))
    params = {int(i): identity_params(int(i)) for i in plan.identities}
    jobs = []
    for number, start in enumerate(range(0, len(plan.image_media), batch)):
        rows = slice(start, start + batch)
        jobs.append(RenderJob([params[int(plan.identities[s])] for s in plan.image_subject[rows]],
                              {key: value[rows] for key, value in nuis.items()}, factors[rows], stream + [number]))
    return jobs, scores


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def write_benchmark(root: Path, target: str, identities: np.ndarray,
                    identity_params: Callable[[int], dict[str, np.ndarray]], seed: int,
                    mapper: Callable[[Callable, list], Iterable] = map) -> int:
    """Write `root` (loose_crop/ and meta/) for `target`; `mapper(render_batch, jobs)` draws the batches in order
    (the bytes do not depend on how). Returns the number of images."""
    files = TARGETS[target]
    stream = [seed, _IJB_STREAM, _TARGET_STREAMS[target]]
    rng = np.random.default_rng(stream)
    plan = plan_benchmark(identities, rng)
    jobs, scores = render_jobs(plan, identity_params, rng, stream)
    images: list[bytes] = []
    parts = []
    for batch_images, batch_points in mapper(render_batch, jobs):
        images += batch_images
        parts.append(batch_points)
    landmarks = np.concatenate(parts)
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    names = [f"{index + 1}.jpg" for index in range(len(images))]
    for name, data in zip(names, images):
        (root / "loose_crop" / name).write_bytes(data)
    template_ids = plan.image_template + 1
    media_ids = plan.image_media + 1
    meta = root / "meta"
    _write_lines(meta / files.faces, [f"{name} {t} {m}" for name, t, m in zip(names, template_ids, media_ids)])
    _write_lines(meta / files.landmarks, [
        f"{name} " + " ".join(f"{v:.3f}" for v in points.ravel()) + f" {score:.4f}"
        for name, points, score in zip(names, landmarks, scores)])
    n_templates = len(plan.template_subject)
    first, second = np.triu_indices(n_templates, k=1)
    same = (plan.template_subject[first] == plan.template_subject[second]).astype(int)
    _write_lines(meta / files.pairs, [f"{a + 1} {b + 1} {s}" for a, b, s in zip(first, second, same)])
    subject_ids = plan.identities[plan.image_subject]
    first_template = np.r_[True, plan.template_subject[1:] != plan.template_subject[:-1]]
    in_gallery = first_template[plan.image_template]
    half = plan.image_subject < len(plan.identities) // 2
    header = "TEMPLATE_ID,SUBJECT_ID,FILENAME"
    sets = [(files.probe, ~in_gallery)] + [
        (files.gallery_file(gallery), in_gallery & (half if index == 0 else ~half))
        for index, gallery in enumerate(files.galleries)]
    for name, selected in sets:
        rows = np.flatnonzero(selected)
        _write_lines(meta / name, [header] + [f"{template_ids[i]},{subject_ids[i]},{names[i]}" for i in rows])
    return len(images)
