"""OneFlow input pipelines read back exactly what the converter wrote (labels, PIL-equal pixels)."""
from __future__ import annotations

from faceflow.runtime.flow import flow

import numpy as np
import pytest

from data_layer_samples import decode, make_dataset
from faceflow.data.convert import convert_bin, convert_rec
from faceflow.data.ofrecord import part_files, read_part, read_records
from faceflow.data.pipeline import TrainPipeline, ValidationPipeline, check_parts_divisible
from faceflow.data.verification_bin import write_bin
from faceflow.errors import FaceflowError

LABELS = [0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5]


def _normalized(data: bytes) -> np.ndarray:
    return ((decode(data).astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def ofrecord_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    make_dataset(root / "rec", LABELS, num_classes=6)
    convert_rec(root / "rec", root / "of", 2, progress=False)
    return root / "of"


def test_train_pipeline_without_mirror_equals_pil_decode(ofrecord_dir):
    records = list(read_records(ofrecord_dir))
    pipeline = TrainPipeline(ofrecord_dir, 6, shuffle=False, mirror=False)
    images, labels = pipeline()
    assert not images.is_global
    assert images.shape == (6, 3, 16, 16) and images.dtype == flow.float32
    assert labels.dtype == flow.int32
    expected = records[:6]  # part-00000 holds every other record; unshuffled reading starts there
    assert labels.numpy().tolist() == [r["label"] for r in expected]
    reference = np.stack([_normalized(r["encoded"]) for r in expected])
    np.testing.assert_allclose(images.numpy(), reference, atol=1e-6)


def test_train_pipeline_mirrors_some_images(ofrecord_dir):
    by_label: dict[int, list[np.ndarray]] = {}
    for r in read_records(ofrecord_dir):
        by_label.setdefault(r["label"], []).append(_normalized(r["encoded"]))
    pipeline = TrainPipeline(ofrecord_dir, 12, seed=3)
    images, labels = pipeline()
    flipped = []
    for image, label in zip(images.numpy(), labels.numpy().tolist()):
        plain = any(np.allclose(image, ref, atol=1e-6) for ref in by_label[label])
        mirrored = any(np.allclose(image, ref[:, :, ::-1], atol=1e-6) for ref in by_label[label])
        assert plain or mirrored
        flipped.append(mirrored and not plain)
    assert any(flipped) and not all(flipped)
    assert set(labels.numpy().tolist()) <= set(LABELS)


def _part_label_orders(ofrecord_dir) -> list[list[int]]:
    """Labels of the 12 records in file order, for both orders of the two parts."""
    part0, part1 = ([r["label"] for r in read_part(path)] for path in part_files(ofrecord_dir))
    return [part0 + part1, part1 + part0]


def test_shuffle_buffer_sets_how_far_records_move(ofrecord_dir):
    def first_epoch(buffer: int, seed: int) -> list[int]:
        pipeline = TrainPipeline(ofrecord_dir, 12, shuffle=True, shuffle_buffer=buffer, seed=seed, mirror=False)
        return pipeline()[1].numpy().tolist()

    in_file_order = _part_label_orders(ofrecord_dir)
    assert all(first_epoch(1, seed) in in_file_order for seed in range(3))  # a 1-record buffer cannot reorder
    assert any(first_epoch(12, seed) not in in_file_order for seed in range(3))


def test_global_pipeline_shards_batch(ofrecord_dir):
    placement = flow.placement("cpu", ranks=[0])
    pipeline = TrainPipeline(ofrecord_dir, 4, placement=placement, sbp=flow.sbp.split(0))
    images, labels = pipeline()
    assert images.is_global and labels.is_global
    assert images.sbp == (flow.sbp.split(0),) and images.shape == (4, 3, 16, 16)
    assert set(labels.numpy().tolist()) <= set(LABELS)


def test_parts_must_divide_world_size(ofrecord_dir):
    assert check_parts_divisible(ofrecord_dir, 2) == 2
    with pytest.raises(FaceflowError, match="2 OFRecord parts cannot be split evenly over 3 ranks"):
        check_parts_divisible(ofrecord_dir, 3)


def test_validation_pipeline_is_ordered_with_mirror(tmp_path):
    from data_layer_samples import jpeg
    images = [jpeg(i) for i in range(6)]
    write_bin(tmp_path / "lfw.bin", images, [True, False, True])
    convert_bin(tmp_path / "lfw.bin", tmp_path / "val", progress=False)
    pipeline = ValidationPipeline(tmp_path / "val", 4)
    assert pipeline.num_images == 6 and len(pipeline) == 2
    assert pipeline.issame.tolist() == [True, False, True]
    for _ in range(2):  # a second pass starts from the first image again
        batches = list(pipeline)
        assert [b[0].shape[0] for b in batches] == [4, 2]
        got = np.concatenate([b[0].numpy() for b in batches])
        mirrored = np.concatenate([b[1].numpy() for b in batches])
        reference = np.stack([_normalized(im) for im in images])
        np.testing.assert_allclose(got, reference, atol=1e-6)
        np.testing.assert_allclose(mirrored, reference[:, :, :, ::-1], atol=1e-6)


def test_global_pipeline_inside_graph(ofrecord_dir):
    placement = flow.placement("cpu", ranks=[0])
    pipeline = TrainPipeline(ofrecord_dir, 4, placement=placement, sbp=flow.sbp.split(0), shuffle=False, mirror=False)

    class Batch(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.pipeline = pipeline

        def build(self):
            images, labels = self.pipeline()
            return images.sum(dim=[1, 2, 3]), labels

    sums, labels = Batch()()
    records = list(read_records(ofrecord_dir))[:4]
    assert labels.is_global and labels.numpy().tolist() == [r["label"] for r in records]
    expected = [_normalized(r["encoded"]).sum() for r in records]
    np.testing.assert_allclose(sums.numpy(), expected, rtol=1e-5, atol=1e-3)
