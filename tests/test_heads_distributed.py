"""Heads on 2 CPU processes (oneflow launcher) against the same computation in this single process."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import dist_heads_worker as worker  # noqa: E402
import train_support  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Run every worker case once on 2 processes; returns the saved arrays."""
    return train_support.launch_two_ranks(Path(worker.__file__), tmp_path_factory.mktemp("heads") / "results.npz")


@pytest.fixture(scope="module")
def two_rank_training(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The tiny training runs of worker.TRAIN_CASES on 2 processes: per-rank losses of each step."""
    return train_support.launch_two_ranks(Path(worker.__file__), tmp_path_factory.mktemp("heads_train") / "training.npz",
                                          "train")


def _two_rank(results: dict[str, np.ndarray], case: tuple) -> dict[str, np.ndarray]:
    prefix = worker.case_name(case) + "/"
    return {key[len(prefix):]: value for key, value in results.items() if key.startswith(prefix)}


FULL_CASES = [case for case in worker.CASES if case[2] == 1.0]


@pytest.mark.distributed
@pytest.mark.parametrize("case", FULL_CASES, ids=worker.case_name)
def test_two_ranks_equal_single_process_full_fc(two_rank_results: dict, case: tuple) -> None:
    """Model parallel / Partial FC 1.0 / data parallel on 2 ranks == one-process full FC (loss and gradients)."""
    got = _two_rank(two_rank_results, case)
    ref = worker.run_case("data_parallel", case[1], 1.0, worker.problem(case[3]))
    np.testing.assert_allclose(got["loss"], ref["loss"], **TOL)
    np.testing.assert_allclose(got["backbone_grad"], ref["backbone_grad"], **TOL)
    np.testing.assert_allclose(got["class_grad"], ref["class_grad"], **TOL)
    running = sorted(key for key in ref if key.startswith("running_"))
    assert sorted(key for key in got if key.startswith("running_")) == running
    assert running or case[1] not in ("adaface", "curricularface")
    for key in running:  # statistics of the global batch on every rank, as in one process
        np.testing.assert_allclose(got[key], ref[key], **TOL)


@pytest.mark.distributed
def test_partial_fc_rate_one_equals_model_parallel(two_rank_results: dict) -> None:
    for loss in ("arcface", "softmax"):
        pfc = _two_rank(two_rank_results, ("partial_fc", loss, 1.0, worker.CLASSES))
        mp = _two_rank(two_rank_results, ("model_parallel", loss, 1.0, worker.CLASSES))
        for field in ("loss", "backbone_grad", "class_grad"):
            np.testing.assert_allclose(pfc[field], mp[field], **TOL)


@pytest.mark.distributed
def test_partial_fc_sample_keeps_positives_and_matches_subset_full_fc(two_rank_results: dict) -> None:
    """Rate 0.3 on 2 ranks: every positive sampled, S rows per rank, loss/grads == full FC over the sample."""
    case = ("partial_fc", "cosface", 0.3, worker.MANY_CLASSES)
    got = _two_rank(two_rank_results, case)
    data = worker.problem(case[3])
    sampled = got["sampled"]
    per_rank = int(np.ceil(case[3] / 2))
    expected_rows = max(int(per_rank * 0.3), worker.BATCH)
    assert len(sampled) == 2 * expected_rows
    assert set(data["labels"].tolist()) <= set(sampled.tolist())
    for rank in range(2):
        part = sampled[rank * expected_rows:(rank + 1) * expected_rows]
        assert np.all((part >= rank * per_rank) & (part < (rank + 1) * per_rank))
        assert len(set(part.tolist())) == expected_rows
    real = sampled[sampled < case[3]]
    subset = dict(data, weight=data["weight"][real], bias=data["bias"][real],
                  labels=np.searchsorted(real, data["labels"]))
    ref = worker.run_case("data_parallel", "cosface", 1.0, subset)
    np.testing.assert_allclose(got["loss"], ref["loss"], **TOL)
    np.testing.assert_allclose(got["backbone_grad"], ref["backbone_grad"], **TOL)
    np.testing.assert_allclose(got["class_grad"][real], ref["class_grad"], **TOL)
    unsampled = np.setdiff1d(np.arange(case[3]), real)
    assert np.all(got["class_grad"][unsampled] == 0.0)


@pytest.mark.distributed
def test_partial_fc_exact_momentum_over_steps_on_two_ranks(two_rank_results: dict) -> None:
    """Three SGD steps of Partial FC 0.3 on 2 ranks, new batch each step: the class tables equal a per-class
    sparse SGD with momentum and weight decay (numpy) on the sampled rows; unsampled rows never move."""
    got = _two_rank(two_rank_results, ("pfc", "momentum"))
    table = got["initial"].copy()
    velocity = np.zeros_like(table)
    touched = set()
    for step in range(worker.PFC_STEPS):
        sampled, grad = got[f"sampled{step}"], got[f"grad{step}"]
        assert len(set(sampled.tolist())) == len(sampled) == len(grad)
        velocity[sampled] = worker.PFC_MU * velocity[sampled] + grad + worker.PFC_WD * table[sampled]
        table[sampled] -= worker.PFC_LR * velocity[sampled]
        touched |= set(sampled.tolist())
    assert 0 < len(touched) < len(table)
    np.testing.assert_allclose(got["weight"], table, **TOL)
    np.testing.assert_allclose(got["weight_mom"], velocity, **TOL)
    untouched = np.setdiff1d(np.arange(len(table)), sorted(touched))
    assert np.array_equal(got["weight"][untouched], got["initial"][untouched])


@pytest.mark.distributed
def test_data_parallel_weight_is_identical_on_every_rank(two_rank_results: dict) -> None:
    per_rank = two_rank_results["data_parallel_init_per_rank"]
    assert per_rank.shape == (2, worker.CLASSES, worker.EMB)
    assert np.array_equal(per_rank[0], per_rank[1]) and np.std(per_rank[0]) == pytest.approx(0.01, rel=0.5)


@pytest.mark.distributed
@pytest.mark.parametrize("case", worker.GRAPH_CASES, ids="-".join)
def test_graph_step_on_two_ranks_equals_single_process_eager(two_rank_results: dict, case: tuple) -> None:
    """Training's nn.Graph on 2 ranks: loss, SGD-updated backbone/class weights and (AdaFace, CurricularFace)
    the running statistics written back after the step == one-process eager full FC."""
    fc_mode, loss = case
    data = worker.problem()
    ref = worker.run_case("data_parallel", loss, 1.0, data)
    prefix = f"graph-{fc_mode}-{loss}/"
    np.testing.assert_allclose(two_rank_results[prefix + "loss"], ref["loss"], **TOL)
    np.testing.assert_allclose(two_rank_results[prefix + "backbone"],
                               data["backbone"] - worker.GRAPH_LR * ref["backbone_grad"], **TOL)
    np.testing.assert_allclose(two_rank_results[prefix + "weight"],
                               data["weight"] - worker.GRAPH_LR * ref["class_grad"], **TOL)
    running = [key for key in ref if key.startswith("running_")]
    assert bool(running) == (loss in ("adaface", "curricularface"))
    for key in running:
        np.testing.assert_allclose(two_rank_results[prefix + key], ref[key], **TOL)


@pytest.mark.distributed
@pytest.mark.parametrize("case", worker.BN_CASES, ids="-".join)
def test_batchnorm_backbone_gradients_equal_per_rank_reference(two_rank_results: dict, case: tuple) -> None:
    """BatchNorm normalizes each rank's batch slice; the class-split heads must hand it back a split(0)
    gradient (a broadcast one made OneFlow mix the ranks' statistics: wrong gradients, NaN at 2 per rank).
    Every rank's local loss is the whole loss (the softmax target was left partial_sum)."""
    prefix = "bn-" + "-".join(case) + "/"
    ref = worker.run_bn_case("data_parallel", case[1], worker.problem())
    np.testing.assert_allclose(two_rank_results[prefix + "loss"], ref["loss"], **TOL)
    np.testing.assert_allclose(two_rank_results[prefix + "local_loss"], np.full(2, ref["loss"]), **TOL)
    np.testing.assert_allclose(two_rank_results[prefix + "backbone_grad"], ref["backbone_grad"], rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(two_rank_results[prefix + "class_grad"], ref["class_grad"], **TOL)


@pytest.mark.distributed
def test_graph_step_with_batchnorm_backbone_equals_per_rank_reference(two_rank_results: dict) -> None:
    """The same in nn.Graph: model-parallel step on a BatchNorm backbone == one-process eager reference."""
    data = worker.problem()
    ref = worker.run_bn_case("data_parallel", "arcface", data)
    prefix = "graph-bn-model_parallel/"
    np.testing.assert_allclose(two_rank_results[prefix + "loss"], ref["loss"], **TOL)
    np.testing.assert_allclose(two_rank_results[prefix + "backbone"],
                               data["backbone"] - worker.GRAPH_LR * ref["backbone_grad"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(two_rank_results[prefix + "weight"],
                               data["weight"] - worker.GRAPH_LR * ref["class_grad"], **TOL)


@pytest.mark.distributed
@pytest.mark.parametrize("case", worker.TRAIN_CASES, ids=worker.train_case_name)
def test_tiny_training_with_two_samples_per_rank_stays_finite(two_rank_training: dict, case: tuple) -> None:
    """The tiny mbf config, 2 processes, model (and data) parallel, batch 2 per rank: every step's loss is
    finite and identical on both ranks (this went NaN at step 3)."""
    losses = two_rank_training[worker.train_case_name(case) + "/losses"]
    assert losses.shape == (2, worker.TRAIN_STEPS)
    assert np.all(np.isfinite(losses)), losses
    np.testing.assert_array_equal(losses[0], losses[1])
    if case[1] == "softmax":  # N(0, 0.01) class weights: the first loss is about log(num_classes)
        assert losses[0, 0] == pytest.approx(np.log(train_support.TINY["num_classes"]), abs=0.1)
