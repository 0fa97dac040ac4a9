"""Partial FC's class sampling follows the run's seed, and a resumed run continues instead of replaying it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from train_support import REPO, tiny_config

from faceflow.runtime.flow import flow

from faceflow.heads import build_head
from faceflow.heads.class_sampler import FusedClassSampler, segment_seed
from faceflow.runtime.device import all_ranks_placement
from faceflow.train.engine import Trainer

CLASSES, EMB, BATCH = 1000, 8, 8
LABELS = np.array([3, 14, 159, 265, 358, 979, 323, 846])


def _head(seed: int):
    config = {"loss": "cosface", "fc_mode": "partial_fc", "sample_rate": 0.1, "num_classes": CLASSES,
              "embedding_size": EMB, "batch_size": BATCH, "seed": seed}
    return build_head(config, all_ranks_placement("cpu"))


def _samples(head, steps: int) -> list[list[int]]:
    """Classes sampled in `steps` forward passes on the same batch (only the random negatives can change)."""
    placement = all_ranks_placement("cpu")
    embeddings = flow.randn(BATCH, EMB).to_global(placement=placement, sbp=flow.sbp.broadcast)
    labels = flow.tensor(LABELS).to_global(placement=placement, sbp=flow.sbp.broadcast)
    drawn = []
    for _ in range(steps):
        head(embeddings, labels)
        drawn.append(head.sampled_classes.tolist())
    return drawn


def test_cpu_sampler_follows_the_seed():
    first = _samples(_head(seed=5), 3)
    assert first == _samples(_head(seed=5), 3)
    assert all(set(LABELS) <= set(sample) for sample in first)  # positives always in; negatives vary per step
    assert first[0] != first[1] != first[2]
    assert _samples(_head(seed=6), 3) != first
    assert _head(seed=5).score_sampler.run_seed == 5


def test_resumed_sampling_starts_a_new_sequence_instead_of_replaying_the_first():
    uninterrupted = _samples(_head(seed=5), 4)
    resumed = _head(seed=5)
    resumed.resume_sampling(2)
    after_resume = _samples(resumed, 2)
    assert after_resume != uninterrupted[:2]  # not a replay of steps 1-2
    again = _head(seed=5)
    again.resume_sampling(2)
    assert _samples(again, 2) == after_resume  # resuming the same checkpoint twice samples the same classes


def test_streams_differ_by_seed_step_and_rank():
    seeds = {segment_seed(seed, step, rank) for seed in (0, 1) for step in (0, 2) for rank in (None, 0, 1)}
    assert len(seeds) == 12 and all(0 <= seed < 2**63 for seed in seeds)


def test_engine_resume_does_not_replay_the_class_sample(tmp_path):
    """The engine reseeds the sampler at resume: on the same batch each step, steps 3-4 of a run resumed at
    step 2 sample other negatives than steps 1-2 did (before, the resumed run drew steps 1-2's again)."""
    config = tiny_config(fc_mode="partial_fc", num_classes=200, sample_rate=0.1, max_steps=4)
    fixed = np.random.RandomState(0)
    images = fixed.randn(config["batch_size"], 3, 112, 112).astype(np.float32)
    labels = fixed.randint(0, 200, config["batch_size"]).astype(np.int32)
    sampled: dict[str, list[list[int]]] = {}

    def run(name: str, max_steps: int) -> None:
        record = sampled.setdefault(name, [])
        trainer: Trainer

        def batches(config, placement, start):
            while True:
                if trainer.updates > start:
                    record.append(trainer.head.sampled_classes.tolist())
                yield (flow.tensor(images).to_global(placement=placement, sbp=flow.sbp.split(0)),
                       flow.tensor(labels).to_global(placement=placement, sbp=flow.sbp.split(0)))

        trainer = Trainer({**config, "max_steps": max_steps}, tmp_path / name, batches=batches)
        trainer.run()
        record.append(trainer.head.sampled_classes.tolist())

    run("whole", 4)
    run("split", 2)
    run("split", 4)
    assert len(sampled["whole"]) == len(sampled["split"]) == 4
    assert sampled["split"][:2] == sampled["whole"][:2]
    assert sampled["split"][2:] != sampled["whole"][:2]


# Traces the fused op in an nn.Graph: the job's op conf carries the attributes its kernel reads. Building the
# plan then fails (the op has no CPU kernel), which leaves OneFlow unable to compile another graph in that
# process: so this runs in a fresh interpreter of its own.
_TRACE = """
import json
from faceflow.runtime.flow import flow
from faceflow.heads.class_sampler import SAMPLE_OP, FusedClassSampler
first, resumed = FusedClassSampler(num_sample=6, seed=7), FusedClassSampler(num_sample=6, seed=7)
resumed.reseed(3)
class Trace(flow.nn.Graph):
    def build(self, weight, labels):
        return first(weight, labels)[0], resumed(weight, labels)[0]
trace = Trace()
try:
    trace(flow.randn(10, 8), flow.tensor([1, 2, 3], dtype=flow.int64))
except Exception as err:
    assert "Cannot find the kernel" in str(err), err
seeds = [op.user_conf.attr["seed"].at_int64 for op in trace._full_job_proto.net.op
         if op.HasField("user_conf") and op.user_conf.op_type_name == SAMPLE_OP]
print(json.dumps({"traced": seeds, "built": [first.seed, resumed.seed]}))
"""


def test_fused_sampler_op_is_built_with_the_runs_seed_and_reseeded_at_resume():
    sampler = FusedClassSampler(num_sample=6, seed=7)
    assert sampler.seed == segment_seed(7, 0) and sampler.seed != -1
    first_op = sampler.op
    sampler.reseed(3)
    assert sampler.seed == segment_seed(7, 3) and sampler.op is not first_op  # a new op: its kernel state is new
    proc = subprocess.run([sys.executable, "-c", _TRACE], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seeds = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seeds["built"] == [segment_seed(7, 0), segment_seed(7, 3)]
    assert sorted(seeds["traced"]) == sorted(seeds["built"])  # the op confs OneFlow built carry these seeds
