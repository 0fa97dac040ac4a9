"""IJB evaluation: the protocol against plain-loop references, the layout reader, bad input, `faceflow ijb`."""
from __future__ import annotations

import io
import json
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image
from sklearn.metrics import roc_curve

from faceflow.cli.main import main as faceflow_main
from faceflow.data import synth
from faceflow.data.synth_ijb import write_benchmark
from faceflow.errors import DataFormatError
from faceflow.eval.ijb import evaluate_ijb
from faceflow.eval.ijb_features import image_features, template_features
from faceflow.eval import ijb_verification
from faceflow.eval.ijb_identification import FPIRS, gallery_result
from faceflow.eval.ijb_layout import TemplateSet, read_layout
from faceflow.eval.ijb_verification import FARS, pair_scores, verification_result


# ---- plain-loop references, written after arcface_torch eval_ijbc.py and InsightFace ijb_evals.py ----

def reference_template_features(features, scores, templates, medias):
    weighted = features * scores[:, None]
    unique = np.unique(templates)
    out = np.zeros((len(unique), features.shape[1]))
    for row, template in enumerate(unique):
        (members,) = np.where(templates == template)
        media_features = []
        for media in np.unique(medias[members]):
            (frames,) = np.where(medias[members] == media)
            group = weighted[members][frames]
            media_features.append(group[0] if len(group) == 1 else group.mean(axis=0))
        out[row] = np.sum(media_features, axis=0)
    return unique, out / np.sqrt(np.sum(out ** 2, axis=1, keepdims=True))


def reference_pair_scores(unique, features, pairs):
    row_of = {int(t): i for i, t in enumerate(unique)}
    scores = np.zeros(len(pairs))
    for index, (a, b) in enumerate(pairs):
        total = 0.0
        for x, y in zip(features[row_of[int(a)]], features[row_of[int(b)]]):
            total += x * y
        scores[index] = total
    return scores


def reference_tar(labels, scores):
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    return {label: float(tpr[np.argmin(np.abs(fpr - far))]) for label, far in FARS.items()}


def reference_1n(probe_features, probe_ids, gallery_features, gallery_ids):
    similarity = probe_features @ gallery_features.T
    top = {1: 0, 5: 0, 10: 0}
    pos, neg, non_gallery = [], [], []
    for index, subject in enumerate(probe_ids):
        if subject in gallery_ids:
            label = np.argwhere(gallery_ids == subject)[0, 0]
            ranked = np.argsort(similarity[index])[::-1]
            for k in top:
                top[k] += label in ranked[:k]
            pos.append(similarity[index][gallery_ids == subject][0])
            neg.append(similarity[index][gallery_ids != subject])
        else:
            non_gallery.append(similarity[index])
    pos, neg, non_gallery = np.array(pos), np.array(neg), np.array(non_gallery)
    correct = pos > neg.max(axis=1)
    ordered = np.sort(non_gallery.max(axis=1))[::-1]
    tpir = {}
    for label, fpir in FPIRS.items():
        threshold = ordered[max(int(ordered.shape[0] * fpir) - 1, 0)]
        tpir[label] = float(np.logical_and(correct, pos > threshold).sum() / pos.shape[0])
    return top, tpir


def _random_benchmark(rng, subjects=40, per_subject=3, dim=24):
    """Images of templates of 1-3 media of 1-3 frames; features cluster by subject."""
    centres = rng.normal(size=(subjects, dim))
    templates, medias, feats, template_subject = [], [], [], []
    media = 100
    for subject in range(subjects):
        for _ in range(per_subject):
            template = 1000 + 7 * len(template_subject)  # sparse, unordered-looking ids
            template_subject.append(subject)
            for _ in range(rng.integers(1, 4)):
                media += int(rng.integers(1, 5))
                for _ in range(rng.integers(1, 4)):
                    templates.append(template)
                    medias.append(media)
                    feats.append(centres[subject] + rng.normal(scale=1.6, size=dim))
    order = rng.permutation(len(templates))  # images need not come grouped
    return (np.array(feats)[order], rng.uniform(0.3, 1.0, len(order)), np.array(templates)[order],
            np.array(medias)[order], np.array(template_subject))


def test_protocol_matches_the_plain_loop_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    features, scores, templates, medias, template_subject = _random_benchmark(rng)
    unique, ours = template_features(features, scores, templates, medias)
    ref_unique, reference = reference_template_features(features, scores, templates, medias)
    assert np.array_equal(unique, ref_unique)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)

    t1, t2 = np.triu_indices(len(unique), k=1)
    pairs = np.stack([unique[t1], unique[t2]], axis=1)
    labels = (template_subject[t1] == template_subject[t2]).astype(int)
    expected = reference_pair_scores(unique, reference, pairs)
    dense = pair_scores(unique, ours, pairs)  # dense pairs: from blocks of the Gram matrix
    monkeypatch.setattr(ijb_verification, "PAIR_BATCH_VALUES", len(unique) * 7)  # Gram blocks of 7 templates
    blocked = pair_scores(unique, ours, pairs[::-1])[::-1]
    batched = pair_scores(unique, ours, pairs, blocked=False)  # sparse pairs: gathered, 35 pairs per batch
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(blocked, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-12)

    result = verification_result(dense, labels)
    assert result["tar_at_far"] == reference_tar(labels, expected)
    assert result["pairs"] == len(pairs) and result["positive_pairs"] == int(labels.sum())
    assert 0.0 < result["tar_at_far"]["1e-3"] < result["tar_at_far"]["1e-1"] <= 1.0, "a task neither trivial nor hopeless"
    roc = result["roc"]
    assert len(roc["fpr"]) <= 150 and roc["fpr"] == sorted(roc["fpr"]) and roc["tpr"] == sorted(roc["tpr"])
    assert roc["fpr"][-1] == roc["tpr"][-1] == 1.0
    assert verification_result(batched, labels)["tar_at_far"] == result["tar_at_far"]


def test_identification_matches_the_plain_loop_reference() -> None:
    rng = np.random.default_rng(1)
    dim = 16
    centres = rng.normal(size=(60, dim))
    gallery_ids = rng.permutation(60)[:30]
    gallery = centres[gallery_ids] + rng.normal(scale=0.9, size=(30, dim))
    probe_ids = rng.integers(0, 60, 400)
    probes = centres[probe_ids] + rng.normal(scale=0.9, size=(400, dim))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    ours = gallery_result(probes, probe_ids, gallery, gallery_ids)
    top, tpir = reference_1n(probes, probe_ids, gallery, gallery_ids)
    assert ours["top_k_counts"] == {f"top{k}": count for k, count in top.items()}
    assert ours["tpir_at_fpir"] == tpir
    assert ours["mated_probes"] + ours["non_mated_probes"] == 400
    assert 0 < ours["top_k"]["top1"] < ours["top_k"]["top10"] < 1


# ---- the reader on a tiny hand-written layout ----

FACES = "a.jpg 1 10\nb.jpg 1 10\nc.jpg 1 11\nsub/d.jpg 2 12\ne.jpg 3 13\n"
LANDMARKS = (
    "a.jpg 10 12 22 12 16 18 11 24 21 24 0.99\n"
    "b.jpg 10.5 12 22 12.5 16 18 11 24 21 24 0.5\n"
    "c.jpg 9 11 21 11 15 17 10 23 20 23 0.875\n"
    "sub/d.jpg 11 13 23 13 17 19 12 25 22 25 1\n"
    "e.jpg 10 12 22 12 16 18 11 24 21 24 0.25\n"
)
PAIRS = "1 2 0\n1 3 0\n\n2 3 1\n"
PROBES = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n3,7,e.jpg\n"
GALLERY_G1 = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,5,a.jpg\n1,5,b.jpg\n1,5,c.jpg\n"
GALLERY_G2 = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n2,7,sub/d.jpg\n"


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _hand_layout(root: Path, **replace: str) -> Path:
    files = {"ijbc_face_tid_mid.txt": FACES, "ijbc_name_5pts_score.txt": LANDMARKS,
             "ijbc_template_pair_label.txt": PAIRS, "ijbc_1N_probe_mixed.csv": PROBES,
             "ijbc_1N_gallery_G1.csv": GALLERY_G1, "ijbc_1N_gallery_G2.csv": GALLERY_G2}
    files.update(replace)
    (root / "IJBC" / "meta").mkdir(parents=True)
    (root / "IJBC" / "loose_crop" / "sub").mkdir(parents=True)
    for name, text in files.items():
        if text is not None:
            (root / "IJBC" / "meta" / name).write_text(text)
    for seed, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "sub/d.jpg", "e.jpg"]):
        (root / "IJBC" / "loose_crop" / name).write_bytes(_jpeg(seed))
    return root


def test_reader_on_a_hand_written_layout(tmp_path: Path) -> None:
    _hand_layout(tmp_path)
    for ijb_dir in (tmp_path, tmp_path / "IJBC"):  # the parent of IJBC/ or IJBC/ itself
        layout = read_layout(ijb_dir, "IJBC")
        assert layout.root == tmp_path / "IJBC"
    assert [p.relative_to(tmp_path / "IJBC" / "loose_crop").as_posix() for p in layout.images] == [
        "a.jpg", "b.jpg", "c.jpg", "sub/d.jpg", "e.jpg"]
    assert layout.templates.tolist() == [1, 1, 1, 2, 3] and layout.medias.tolist() == [10, 10, 11, 12, 13]
    assert layout.landmarks.shape == (5, 5, 2)
    assert layout.landmarks[1].tolist() == [[10.5, 12], [22, 12.5], [16, 18], [11, 24], [21, 24]]
    np.testing.assert_allclose(layout.scores, [0.99, 0.5, 0.875, 1, 0.25], rtol=1e-6)
    assert layout.landmark_lines.tolist() == [1, 2, 3, 4, 5]
    assert layout.pairs.tolist() == [[1, 2], [1, 3], [2, 3]] and layout.labels.tolist() == [0, 0, 1]
    assert layout.probes.templates.tolist() == [3] and layout.probes.subjects.tolist() == [7]
    assert {name: (s.templates.tolist(), s.subjects.tolist()) for name, s in layout.galleries.items()} == {
        "G1": ([1], [5]), "G2": ([2], [7])}
    no_1n = tmp_path / "no1n"
    _hand_layout(no_1n, **{"ijbc_1N_gallery_G2.csv": None})
    assert read_layout(no_1n, "IJBC").galleries is None, "1:N needs all three files"


@pytest.mark.parametrize("replace,message", [
    ({"ijbc_template_pair_label.txt": None}, r"meta/ijbc_template_pair_label.txt: missing \(IJB meta file\)"),
    ({"ijbc_name_5pts_score.txt": LANDMARKS.replace("b.jpg 10.5 12 ", "b.jpg 10.5 ")},
     r"ijbc_name_5pts_score.txt:2: expected image name, 10 landmark coordinates and a detector score \(12 fields\), got 11"),
    ({"ijbc_name_5pts_score.txt": LANDMARKS.replace("c.jpg 9 11", "c.jpg 9 x11")},
     r"ijbc_name_5pts_score.txt:3: not a number: 'x11'"),
    ({"ijbc_name_5pts_score.txt": LANDMARKS.replace("c.jpg", "z.jpg")},
     r"ijbc_name_5pts_score.txt:3: image 'z.jpg', but line 3 of ijbc_face_tid_mid.txt is 'c.jpg'"),
    ({"ijbc_face_tid_mid.txt": FACES.replace("e.jpg", "../e.jpg"), "ijbc_name_5pts_score.txt": LANDMARKS.replace("e.jpg", "../e.jpg")},
     r"ijbc_name_5pts_score.txt:5: image name '../e.jpg' leaves loose_crop/"),
    ({"ijbc_face_tid_mid.txt": FACES.replace("b.jpg 1 10", "b.jpg 1")},
     r"ijbc_face_tid_mid.txt:2: expected image_name template_id media_id, got 2 fields"),
    ({"ijbc_template_pair_label.txt": PAIRS + "3 9 0\n"},
     r"ijbc_template_pair_label.txt:5: template 9 has no images in ijbc_face_tid_mid.txt"),
    ({"ijbc_template_pair_label.txt": PAIRS.replace("1 3 0", "1 3")},
     r"ijbc_template_pair_label.txt:2: expected template1 template2 label, got 2 fields"),
    ({"ijbc_template_pair_label.txt": PAIRS.replace("2 3 1", "2 3 2")},
     r"ijbc_template_pair_label.txt:4: label must be 0 or 1, got 2"),
    ({"ijbc_1N_gallery_G1.csv": GALLERY_G1 + "4,9,x.jpg\n"},
     r"ijbc_1N_gallery_G1.csv:5: template 4 has no images in ijbc_face_tid_mid.txt"),
    ({"ijbc_1N_gallery_G1.csv": GALLERY_G1.replace("1,5,b.jpg", "1,6,b.jpg")},
     r"ijbc_1N_gallery_G1.csv:3: template 1 has subject 6, line 2 says 5"),
    ({"ijbc_1N_gallery_G2.csv": GALLERY_G2 + "3,7,e.jpg\n"},
     r"ijbc_1N_gallery_G2.csv:3: subject 7 has a second gallery template \(3; one per subject\)"),
])
def test_bad_layouts_name_the_file_and_line(tmp_path: Path, replace: dict, message: str) -> None:
    _hand_layout(tmp_path, **replace)
    with pytest.raises(DataFormatError, match=message):
        read_layout(tmp_path, "IJBC")


def _grey_embed(batch: np.ndarray) -> np.ndarray:
    """4 x 4 block means of each channel: a small deterministic stand-in for a network."""
    n = len(batch)
    return batch.reshape(n, 3, 4, 28, 4, 28).mean(axis=(3, 5)).reshape(n, 48)


def test_unreadable_or_missing_crops_name_the_file_and_landmark_line(tmp_path: Path) -> None:
    _hand_layout(tmp_path)
    crop = tmp_path / "IJBC" / "loose_crop" / "c.jpg"
    crop.write_bytes(crop.read_bytes()[:200])
    layout = read_layout(tmp_path, "IJBC")
    with pytest.raises(DataFormatError, match=r"loose_crop/c\.jpg \(line 3 of ijbc_name_5pts_score\.txt\): truncated JPEG"):
        image_features(layout, _grey_embed, batch_size=2, progress=False)
    crop.unlink()
    with pytest.raises(DataFormatError, match=r"loose_crop/c\.jpg \(line 3 of ijbc_name_5pts_score\.txt\): cannot read"):
        image_features(layout, _grey_embed, batch_size=2, progress=False)


def _block_mean_onnx(path: Path) -> None:
    """An ONNX 'network' computing _grey_embed: 28 x 28 average pooling, flattened to 48 values."""
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
         helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1)],
        "block_mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 48])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


@pytest.fixture(scope="module")
def tiny_ijb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ijb")
    write_benchmark(root / "IJBC", "IJBC", np.arange(5000, 5006), partial(synth.identity_params, 0), seed=0)
    return root


def test_cli_on_an_onnx_model_writes_the_documented_json(tiny_ijb: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model.onnx"
    _block_mean_onnx(model)
    out = tmp_path / "ijb" / "IJBC.json"
    assert faceflow_main(["ijb", str(model), str(tiny_ijb), "--target", "IJBC", "--out", str(out),
                          "--batch-size", "16", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[IJBC] TAR@FAR=1e-4:" in printed and "1:N top1" in printed
    result = json.loads(out.read_text())
    expected = evaluate_ijb(tiny_ijb, "IJBC", _grey_embed, batch_size=7, progress=False)
    assert result["tar_at_far"] == pytest.approx(expected["tar_at_far"], abs=1e-12)
    assert set(result) >= {"target", "model", "images", "templates", "pairs", "positive_pairs", "negative_pairs",
                           "min_far", "tar_at_far", "auc", "roc", "identification", "embedding_size", "seconds"}
    assert result["model"] == {"path": str(model), "format": "onnx"}
    assert list(result["tar_at_far"]) == list(FARS) and result["embedding_size"] == 48
    assert result["templates"] == 18 and result["pairs"] == 18 * 17 // 2 and result["positive_pairs"] == 6 * 3
    assert set(result["identification"]["galleries"]) == {"G1", "G2"}
    assert result["identification"]["galleries"]["G1"]["mated_probes"] == 6  # 3 subjects x 2 probe templates


def test_cli_errors_are_one_line(tiny_ijb: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "model.onnx"
    _block_mean_onnx(model)
    assert faceflow_main(["ijb", str(model), str(tmp_path / "nowhere"), "--target", "IJBB", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceflow ijb: error: ") and "loose_crop: missing" in err and "\n" not in err
    assert faceflow_main(["ijb", str(tmp_path / "none.onnx"), str(tiny_ijb), "--target", "IJBC", "--quiet"]) == 1
    assert "none.onnx: no such ONNX file" in capsys.readouterr().err
