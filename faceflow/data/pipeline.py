"""OneFlow input pipelines over OFRecord parts, built from OneFlow's own data ops.

TrainPipeline: OFRecordReader (shuffled) -> RGB image decode -> CoinFlip mirror -> CropMirrorNormalize
to `(x - 127.5) / 127.5` NCHW float32, plus int32 labels. Given a placement and `split(0)` it yields
global tensors, each rank reading its own share of the parts. ValidationPipeline reads in order and
also returns the mirrored copy that the verification protocol embeds.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from faceflow.runtime.flow import flow

from faceflow.data.ofrecord import PART_PREFIX, PART_SUFFIX_LENGTH, count_records, part_files, read_records
from faceflow.data.train_parts import image_size_of
from faceflow.errors import FaceflowError

MEAN = [127.5, 127.5, 127.5]
STD = [127.5, 127.5, 127.5]


def check_parts_divisible(data_dir: str | Path, world_size: int) -> int:
    """Number of parts in `data_dir`; raises when `world_size` ranks cannot share them evenly."""
    num_parts = len(part_files(data_dir))
    if world_size < 1 or num_parts % world_size:
        raise FaceflowError(
            f"{data_dir}: {num_parts} OFRecord parts cannot be split evenly over {world_size} ranks "
            f"(reconvert with `faceflow convert rec ... --parts` a multiple of {world_size})")
    return num_parts


def _normalizer(image_size: tuple[int, int]) -> flow.nn.Module:
    return flow.nn.CropMirrorNormalize(color_space="RGB", output_layout="NCHW", crop_h=image_size[0],
                                       crop_w=image_size[1], crop_pos_y=0.5, crop_pos_x=0.5, mean=MEAN, std=STD,
                                       output_dtype=flow.float)


class TrainPipeline(flow.nn.Module):
    """One shuffled, randomly mirrored training batch per forward(): (images NCHW float32, labels int32).

    With `placement`/`sbp` the outputs are global tensors of global batch `batch_size * world_size`,
    split over the placement's ranks (the reader runs on the CPU ranks of that placement).
    `num_threads` sets OneFlow's process-wide CPU thread count (image decoding runs on it) when it is
    below the core count (OneFlow already uses every core otherwise).
    """

    def __init__(self, data_dir: str | Path, batch_size: int, *, placement: flow.placement | None = None,
                 sbp: flow.sbp.sbp | tuple | None = None, shuffle: bool = True, shuffle_buffer: int = 1024,
                 seed: int = 0, mirror: bool = True, num_threads: int = 2, image_size: tuple[int, int] | None = None):
        super().__init__()
        self.data_dir = str(data_dir)
        self.placement, self.sbp = placement, sbp
        world = 1 if placement is None else int(np.asarray(placement.ranks).size)
        num_parts = check_parts_divisible(data_dir, world)
        if batch_size < 1:
            raise FaceflowError(f"batch_size: must be at least 1, got {batch_size}")
        self.batch_size, self.global_batch_size = batch_size, batch_size * world
        self.image_size = image_size or image_size_of(data_dir)
        if 0 < num_threads < (os.cpu_count() or 1):
            flow.set_num_threads(num_threads)
        reader_place: dict = {}
        if placement is not None:
            if sbp is None:
                raise FaceflowError("TrainPipeline: sbp is required with a placement (use flow.sbp.split(0))")
            cpu = flow.placement("cpu", ranks=np.asarray(placement.ranks).tolist())
            reader_place = {"placement": cpu, "sbp": sbp}
        self.reader = flow.nn.OFRecordReader(
            self.data_dir, batch_size=self.global_batch_size, data_part_num=num_parts, part_name_prefix=PART_PREFIX,
            part_name_suffix_length=PART_SUFFIX_LENGTH, random_shuffle=shuffle, shuffle_buffer_size=shuffle_buffer,
            shuffle_after_epoch=shuffle, random_seed=seed, **reader_place)
        self.decode = flow.nn.OFRecordImageDecoder("encoded", color_space="RGB")
        self.decode_label = flow.nn.OFRecordRawDecoder("label", shape=(), dtype=flow.int32)
        self.coin_flip = flow.nn.CoinFlip(batch_size=self.global_batch_size, random_seed=seed, probability=0.5,
                                          **reader_place) if mirror else None
        self.normalize = _normalizer(self.image_size)

    def forward(self) -> tuple[flow.Tensor, flow.Tensor]:
        record = self.reader()
        images = self.normalize(self.decode(record), self.coin_flip() if self.coin_flip is not None else None)
        labels = self.decode_label(record)
        if self.placement is not None and self.placement.type != "cpu":
            images = images.to_global(placement=self.placement, sbp=self.sbp)
            labels = labels.to_global(placement=self.placement, sbp=self.sbp)
        return images, labels


class ValidationPipeline(flow.nn.Module):
    """Verification images in file order with their horizontal mirror, as local CPU tensors.

    Iterating yields `(images, mirrored)` batches covering every image exactly once (the last batch
    may be smaller); `issame` holds the per-pair flags read from the parts.
    """

    def __init__(self, data_dir: str | Path, batch_size: int, *, image_size: tuple[int, int] | None = None):
        super().__init__()
        self.data_dir = str(data_dir)
        self.num_parts = len(part_files(data_dir))
        self.batch_size = batch_size
        self.num_images = sum(count_records(data_dir))
        self.image_size = image_size or image_size_of(data_dir)
        self.issame = np.array([bool(r.get("issame", 0)) for r in read_records(data_dir)][::2], dtype=bool)
        self.decode = flow.nn.OFRecordImageDecoder("encoded", color_space="RGB")
        self.normalize = _normalizer(self.image_size)
        self.reader = self._new_reader()

    def _new_reader(self) -> flow.nn.Module:
        return flow.nn.OFRecordReader(self.data_dir, batch_size=self.batch_size, data_part_num=self.num_parts,
                                      part_name_prefix=PART_PREFIX, part_name_suffix_length=PART_SUFFIX_LENGTH,
                                      random_shuffle=False)

    def forward(self) -> tuple[flow.Tensor, flow.Tensor]:
        images = self.normalize(self.decode(self.reader()))
        return images, flow.flip(images, [3])

    def __len__(self) -> int:
        return -(-self.num_images // self.batch_size)

    def __iter__(self) -> Iterator[tuple[flow.Tensor, flow.Tensor]]:
        self.reader = self._new_reader()
        remaining = self.num_images
        while remaining > 0:
            images, mirrored = self.forward()
            if remaining < self.batch_size:
                images, mirrored = images[:remaining], mirrored[:remaining]
            remaining -= self.batch_size
            yield images, mirrored
