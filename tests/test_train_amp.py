"""The eager loss scaler: one overflow decision for all ranks, kept in checkpoints (2 CPU processes, scaler forced on)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import dist_amp_worker as worker  # noqa: E402
import train_support  # noqa: E402

from faceflow.errors import FaceflowError
from faceflow.train.amp import FORCE_OVERFLOW_ENV, ForcedOverflow, forced_overflow

INIT = 2.0**16
SCALE, GOOD, BACKBONE, HEAD = range(len(worker.FIELDS))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Every case of the worker trained and resumed on 2 processes."""
    return train_support.launch_two_ranks(Path(worker.__file__), tmp_path_factory.mktemp("amp") / "amp.npz")


def test_scaler_unscales_grows_when_stable_and_halves_on_overflow():
    from faceflow.runtime.flow import flow

    from faceflow.train.amp import DynamicLossScaler

    param = flow.nn.Parameter(flow.ones(3))
    (param * 8.0).sum().backward()
    scaler = DynamicLossScaler(init_scale=4.0, growth_interval=1)
    assert scaler.unscale_and_check([param])
    assert param.grad.numpy().tolist() == [2.0, 2.0, 2.0] and scaler.scale == 8.0
    param.grad.fill_(float("nan"))
    assert not scaler.unscale_and_check([param]) and scaler.state_dict() == {"scale": 4.0, "good_steps": 0}
    restored = DynamicLossScaler(growth_interval=1)
    restored.load_state_dict(scaler.state_dict())
    assert restored.scale == 4.0


def test_forced_overflow_setting_is_parsed_or_refused_in_one_line():
    assert forced_overflow({}) is None
    assert forced_overflow({FORCE_OVERFLOW_ENV: "3"}) == ForcedOverflow(3, None)
    assert forced_overflow({FORCE_OVERFLOW_ENV: "3:1"}).hits(3, 1) and not ForcedOverflow(3, 1).hits(3, 0)
    for bad in ("0", "x", "2:-1", "1:2:3"):
        with pytest.raises(FaceflowError, match=rf"^{FORCE_OVERFLOW_ENV}='{bad}': expected STEP or STEP:RANK"):
            forced_overflow({FORCE_OVERFLOW_ENV: bad})


@pytest.mark.distributed
@pytest.mark.parametrize("case", worker.CASES, ids=worker.case_name)
def test_one_ranks_overflow_makes_every_rank_skip_and_halve_together(two_ranks: dict, case: tuple) -> None:
    """Rank 1's class-weight shard overflows at step 2: both ranks skip that update (no parameter moves) and
    halve the scale; the scaler states agree on every step. With clip_grad_norm the ranks then clip together
    (a per-rank decision would leave rank 0 waiting in the clip's collective: the run would hang)."""
    run = two_ranks[worker.case_name(case) + "/run"]
    assert run.shape == (2, worker.STEPS + 1, len(worker.FIELDS))
    np.testing.assert_array_equal(run[0, :, :HEAD], run[1, :, :HEAD])  # one decision, identical backbones
    before = worker.OVERFLOW_STEP - 1  # row of the snapshot taken before the overflowing step
    assert run[0, :, SCALE].tolist() == [INIT] * (before + 1) + [INIT / 2] * (worker.STEPS - before)
    assert run[0, :, GOOD].tolist() == [0, 1, 0, 1, 2]
    backbone = run[0, :, BACKBONE]
    assert backbone[before + 1] == backbone[before], "the skipped update moved the backbone"
    assert np.all(np.diff(backbone[[0, 1, before + 2, before + 3]]) != 0), "the other updates were applied"
    if case[0] == "model_parallel":  # each rank's class-weight shard (Partial FC's re-sampled rows are not compared)
        np.testing.assert_array_equal(run[:, before + 1, HEAD], run[:, before, HEAD])
        assert np.all(run[:, 0, HEAD] != run[:, 1, HEAD])
    log = str(two_ranks[worker.case_name(case) + "/log"])
    assert f"step {worker.OVERFLOW_STEP}: gradient overflow, update skipped; loss scale 65536 -> 32768" in log


@pytest.mark.distributed
def test_resume_restores_the_loss_scale_from_the_checkpoint(two_ranks: dict) -> None:
    """Resumed from step 3 (after the overflow at step 2): the halved scale and its good-step count come back."""
    name = worker.case_name(worker.RESUMED)
    run, resumed = two_ranks[name + "/run"], two_ranks[name + "/resumed"]
    step = worker.CHECKPOINT_STEP
    assert resumed.shape == (2, worker.STEPS - step + 1, len(worker.FIELDS))
    np.testing.assert_array_equal(resumed[:, 0, [SCALE, GOOD]], run[:, step, [SCALE, GOOD]])
    assert resumed[0, 0, SCALE] == INIT / 2 and resumed[0, 0, GOOD] == 1
    np.testing.assert_array_equal(resumed[0, -1, [SCALE, GOOD]], run[0, -1, [SCALE, GOOD]])
    assert f"(step {step} of {worker.STEPS}, loss scale 32768)" in str(two_ranks[name + "/resumed_log"])
