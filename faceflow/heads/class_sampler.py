"""Partial FC's random class sampling, seeded by the run: OneFlow's fused CUDA op and the tensor-op sampler.

Both draw from a stream seeded by `segment_seed(seed, step)`: the config `seed` decides which classes are
sampled, and a run resumed at step k draws the stream of (seed, k) instead of replaying the one it started
with at step 0 (resuming twice from the same checkpoint samples the same classes). A resumed run does not
repeat the samples an uninterrupted run would have drawn after step k: the fused op keeps its random state
inside its kernel, where it cannot be saved, and the tensor-op sampler does the same so that both behave alike.

- `FusedClassSampler`: OneFlow's `distributed_partial_fc_sample` op built with its `seed` attribute set.
  `nn.DistributedPariticalFCSample` leaves it at -1 (every run samples the same sequence), and its dispatch
  function takes only `num_sample`, so the seed is set when the op is built. The kernel (OneFlow 0.9.0,
  oneflow/user/kernels/partial_fc_sample_kernel.cu) gives each rank its own seed derived from this one
  (std::seed_seq) when the class table is split over several ranks. CUDA only: it has no CPU kernel.
- `ScoreSampler`: uniform scores for the tensor-op sampler (top-k over the rank's shard), from a generator of
  its own seeded per rank, so the ranks' shards are sampled independently.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from faceflow.runtime.flow import flow

SAMPLE_OP = "distributed_partial_fc_sample"
SAMPLE_OP_OUTPUTS = ("mapped_label", "sampled_label", "sampled_weight")


def segment_seed(seed: int, step: int, rank: Optional[int] = None) -> int:
    """Seed (in [0, 2**63)) of the sampling stream of a run segment that starts after `step` updates;
    with `rank`, the stream of that rank alone."""
    words = [seed, step, 0 if rank is None else rank + 1]  # fixed length: SeedSequence ignores trailing zeros
    high, low = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return (int(high) << 31) ^ int(low)


def build_sample_op(seed: int) -> flow._oneflow_internal.one.UserOpExpr:
    """The `distributed_partial_fc_sample` op expression with its `seed` attribute set to `seed`."""
    builder = flow._oneflow_internal.one.OpBuilder(SAMPLE_OP, flow.framework.id_util.UniqueStr(SAMPLE_OP))
    builder.input("weight", 1)
    builder.input("label", 1)
    for name in SAMPLE_OP_OUTPUTS:
        builder.output(name, 1)
    builder.attr("seed", f"at_int64: {int(seed)}")
    return builder.build()


class FusedClassSampler:
    """`sampler(weight, labels) -> (mapped labels, sampled class ids, sampled weight rows)` on CUDA, seeded."""

    def __init__(self, num_sample: int, seed: int) -> None:
        self.num_sample = num_sample
        self.run_seed = seed
        self.reseed(0)

    def reseed(self, step: int) -> None:
        """Start the stream of the segment beginning after `step` updates (a new op: its kernel state is new)."""
        self.seed = segment_seed(self.run_seed, step)
        self.op = build_sample_op(self.seed)

    def __call__(self, weight: flow.Tensor, labels: flow.Tensor) -> tuple[flow.Tensor, flow.Tensor, flow.Tensor]:
        mapped, sampled, rows = flow._C.dispatch_distributed_partial_fc_sample(
            self.op, weight=weight, label=labels, num_sample=self.num_sample)
        return mapped, sampled, rows


class ScoreSampler:
    """`scores(count, device)`: uniform [0, 1) scores, one per row of this rank's shard, from this rank's stream."""

    def __init__(self, seed: int, rank: int) -> None:
        self.run_seed = seed
        self.rank = rank
        self.step = 0
        self._generators: dict[str, flow.Generator] = {}

    def reseed(self, step: int) -> None:
        """Start the stream of the segment beginning after `step` updates."""
        self.step = step
        self._generators = {}

    def scores(self, count: int, device: flow.device) -> flow.Tensor:
        """The next `count` scores of the stream on `device`."""
        key = str(device)
        if key not in self._generators:
            generator = flow.Generator(key)
            generator.manual_seed(segment_seed(self.run_seed, self.step, self.rank))
            self._generators[key] = generator
        return flow.rand(count, device=device, generator=self._generators[key])


__all__ = ["FusedClassSampler", "SAMPLE_OP", "ScoreSampler", "build_sample_op", "segment_seed"]
