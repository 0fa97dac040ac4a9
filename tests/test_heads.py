"""Heads in one process: margin logits and losses vs numpy closed forms, config errors, Partial FC updates, graph mode."""
from __future__ import annotations

import numpy as np
from faceflow.runtime.flow import flow
import pytest

from faceflow.errors import ConfigError
from faceflow.heads import build_head
from faceflow.heads.margins import Margins, margin_logits, resolve_margins
from faceflow.heads.partial_fc import PartialFC
from faceflow.heads.registry import LOSSES
from faceflow.runtime.device import all_ranks_placement

# the combined-margin losses of heads/margins.py (those built by the default head, with margins)
NAMED_MARGIN_LOSSES = [name for name, spec in LOSSES.load_all().items() if spec.head is None and spec.margins]
B, E, C = 6, 8, 13


def numpy_margin_logits(cos: np.ndarray, labels: np.ndarray, m: Margins) -> np.ndarray:
    """s * cos(theta) for others, s * (cos(m1*theta + m2) - m3) for the target (float64)."""
    out = cos.astype(np.float64).copy()
    rows = np.arange(len(labels))
    out[rows, labels] = np.cos(m.m1 * np.arccos(out[rows, labels]) + m.m2) - m.m3
    return m.s * out


def numpy_loss(x: np.ndarray, labels: np.ndarray, w: np.ndarray, b: np.ndarray, m: Margins | None) -> float:
    """Mean softmax cross entropy of the margin (or plain FC) logits, float64."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    if m is None:
        z = x @ w.T + b
    else:
        cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
        z = numpy_margin_logits(cos, labels, m)
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]))


def _data(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(B, E)).astype(np.float32), rng.integers(0, C, B).astype(np.int64),
            rng.normal(size=(C, E)).astype(np.float32), (rng.normal(size=C) * 0.1).astype(np.float32))


def _global(array: np.ndarray, sbp=flow.sbp.broadcast) -> flow.Tensor:
    placement = all_ranks_placement("cpu")
    return flow.tensor(array, placement=placement, sbp=flow.sbp.broadcast).to_global(sbp=sbp)


def _head(config: dict) -> flow.nn.Module:
    base = {"loss": "arcface", "margins": None, "fc_mode": "data_parallel", "sample_rate": 1.0,
            "num_classes": C, "embedding_size": E}
    return build_head({**base, **config}, all_ranks_placement("cpu"))


def _set(table: flow.Tensor, values: np.ndarray) -> None:
    with flow.no_grad():
        full = table.to_global(sbp=flow.sbp.broadcast).to_local().numpy().copy()
        full[: len(values)] = values
        table.copy_(_global(full, table.sbp))


@pytest.mark.parametrize("loss", NAMED_MARGIN_LOSSES)
def test_margin_logits_equal_numpy_closed_form(loss: str) -> None:
    rng = np.random.default_rng(1)
    cos = rng.uniform(-0.95, 0.95, (B, C)).astype(np.float32)
    labels = rng.integers(0, C, B)
    margins = resolve_margins(loss)
    got = margin_logits(flow.tensor(cos), flow.tensor(labels), margins).numpy()
    np.testing.assert_allclose(got, numpy_margin_logits(cos, labels, margins), rtol=1e-5, atol=1e-4)


def test_combined_margin_keeps_m2_when_m3_is_set() -> None:
    margins = resolve_margins("combined", {"m2": 0.3, "m3": 0.2, "s": 32})
    cos = np.array([[0.6, 0.1]], dtype=np.float32)
    got = margin_logits(flow.tensor(cos), flow.tensor(np.array([0])), margins).numpy()
    assert got[0, 0] == pytest.approx(32 * (np.cos(np.arccos(0.6) + 0.3) - 0.2), rel=1e-5)
    assert got[0, 0] != pytest.approx(32 * (0.6 - 0.2), rel=1e-3)  # arcface_torch's m2-dropping result
    assert got[0, 1] == pytest.approx(32 * 0.1, rel=1e-6)


@pytest.mark.parametrize("loss", NAMED_MARGIN_LOSSES)
def test_margin_gradients_are_finite_at_cos_plus_minus_one(loss: str) -> None:
    """OneFlow's combined_margin_loss has an inf/NaN gradient at |cos| = 1; the head clamps first."""
    margins = resolve_margins(loss)
    cos = flow.tensor(np.array([[1.0, -1.0, 0.2], [-1.0, 1.0, 0.3], [0.5, 1.0, -1.0]], dtype=np.float32),
                      requires_grad=True)
    labels = np.array([0, 0, 2])
    logits = margin_logits(cos, flow.tensor(labels), margins)
    logits.sum().backward()
    assert np.all(np.isfinite(logits.numpy())) and np.all(np.isfinite(cos.grad.numpy()))
    inside = np.clip(cos.numpy(), -1 + 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(logits.numpy(), numpy_margin_logits(inside, labels, margins), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loss", ["softmax"] + NAMED_MARGIN_LOSSES)
@pytest.mark.parametrize("fc_mode", ["data_parallel", "model_parallel", "partial_fc"])
def test_loss_equals_numpy_closed_form(loss: str, fc_mode: str) -> None:
    x, labels, w, b = _data()
    head = _head({"loss": loss, "fc_mode": fc_mode, "batch_size": B})
    _set(head.weight, w)
    if loss == "softmax":
        _set(head.bias, b)
    value = head(_global(x, flow.sbp.split(0)), _global(labels, flow.sbp.split(0)))
    expected = numpy_loss(x, labels, w, b, resolve_margins(loss))
    assert float(value.to_global(sbp=flow.sbp.broadcast).to_local().numpy()) == pytest.approx(expected, rel=1e-5)


def test_margin_overrides_change_the_loss() -> None:
    x, labels, w, b = _data()
    margins = {"m1": 1.2, "m2": 0.1, "m3": 0.05, "s": 30.0}
    head = _head({"loss": "combined", "margins": margins})
    _set(head.weight, w)
    value = head(_global(x, flow.sbp.split(0)), _global(labels, flow.sbp.split(0)))
    expected = numpy_loss(x, labels, w, b, Margins(**margins))
    assert float(value.to_global(sbp=flow.sbp.broadcast).to_local().numpy()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("config,key", [
    ({"loss": "triplet"}, "loss"), ({"fc_mode": "pipeline"}, "fc_mode"),
    ({"margins": {"m4": 1.0}}, "margins.m4"), ({"loss": "sphereface", "margins": {"m1": 1.0}}, "margins.m1"),
    ({"loss": "softmax", "margins": {"s": 1.0}}, "margins"), ({"num_classes": 0}, "num_classes"),
])
def test_bad_config_names_the_key(config: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}:"):
        _head(config)


def _pfc_step(head: PartialFC, opt: flow.optim.Optimizer, x: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """One training step; returns the gradients of the activated weight (and bias) rows, in sampled order."""
    loss = head(_global(x, flow.sbp.split(0)), _global(labels, flow.sbp.split(0)))
    loss.backward()
    grads = [p.grad.to_local().numpy().copy() for p in (head.weight_activated, head.bias_activated) if p is not None]
    opt.step()
    opt.zero_grad()
    return grads


@pytest.mark.parametrize("loss", ["arcface", "softmax"])
def test_partial_fc_updates_only_sampled_rows_with_exact_momentum(loss: str) -> None:
    """Three SGD(momentum, weight decay) steps == per-class sparse SGD in numpy; unsampled rows never move."""
    classes, lr, mu, wd = 200, 0.1, 0.9, 5e-4
    rng = np.random.default_rng(3)
    head = build_head({"loss": loss, "margins": None, "fc_mode": "partial_fc", "sample_rate": 0.1,
                       "num_classes": classes, "embedding_size": E, "batch_size": B}, all_ranks_placement("cpu"))
    opt = flow.optim.SGD(head.parameters(), lr=lr, momentum=mu, weight_decay=wd)
    head.bind_optimizer(opt)
    names = ["weight"] + (["bias"] if loss == "softmax" else [])
    tables = [getattr(head, name).to_local().numpy().copy() for name in names]
    velocities = [np.zeros_like(table) for table in tables]
    for _ in range(3):
        labels = rng.integers(0, classes, B)
        grads = _pfc_step(head, opt, rng.normal(size=(B, E)).astype(np.float32), labels)
        sampled = head.sampled_classes
        assert len(sampled) == head.num_sample == 20 and set(labels) <= set(sampled)
        for table, velocity, grad in zip(tables, velocities, grads):
            velocity[sampled] = mu * velocity[sampled] + grad + wd * table[sampled]
            table[sampled] -= lr * velocity[sampled]
    state = head.state_dict()  # writes the last step's rows back
    for name, table, velocity in zip(names, tables, velocities):
        np.testing.assert_allclose(state[name].to_local().numpy(), table, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state[f"{name}_mom"].to_local().numpy(), velocity, rtol=1e-5, atol=1e-6)


def test_partial_fc_keeps_both_adamw_moments_per_class() -> None:
    """Three AdamW steps == per-class sparse AdamW in numpy (decoupled decay, bias correction by step)."""
    classes, lr, wd, (b1, b2), eps = 200, 0.01, 0.05, (0.9, 0.999), 1e-8
    rng = np.random.default_rng(5)
    head = build_head({"loss": "arcface", "margins": None, "fc_mode": "partial_fc", "sample_rate": 0.1,
                       "num_classes": classes, "embedding_size": E, "batch_size": B}, all_ranks_placement("cpu"))
    opt = flow.optim.AdamW(head.parameters(), lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    head.bind_optimizer(opt)
    table = head.weight.to_local().numpy().copy()
    first, second = np.zeros_like(table), np.zeros_like(table)
    for t in range(1, 4):
        labels = rng.integers(0, classes, B)
        (grad,) = _pfc_step(head, opt, rng.normal(size=(B, E)).astype(np.float32), labels)
        s = head.sampled_classes
        first[s] = b1 * first[s] + (1 - b1) * grad
        second[s] = b2 * second[s] + (1 - b2) * grad**2
        step = lr / (1 - b1**t) * first[s] / (np.sqrt(second[s]) / np.sqrt(1 - b2**t) + eps)
        table[s] = table[s] - step - lr * wd * table[s]
    state = head.state_dict()
    for name, expected in (("weight", table), ("weight_exp_avg", first), ("weight_exp_avg_sq", second)):
        np.testing.assert_allclose(state[name].to_local().numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=name)


def test_partial_fc_state_slots_live_from_backward_to_the_next_write_back() -> None:
    """The sampled rows' momentum enters the optimizer at backward (from the table) and leaves it at the
    next forward (into the table): it is not held through forward/backward, where memory peaks."""
    rng = np.random.default_rng(6)
    head = build_head({"loss": "arcface", "margins": None, "fc_mode": "partial_fc", "sample_rate": 0.1,
                       "num_classes": 200, "embedding_size": E, "batch_size": B}, all_ranks_placement("cpu"))
    opt = flow.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    head.bind_optimizer(opt, keep_momentum=False)
    head.bind_optimizer(opt)  # binding again in exact mode takes effect
    slots = opt._state.setdefault(head.weight_activated, {})
    for step in range(2):
        loss = head(_global(rng.normal(size=(B, E)).astype(np.float32), flow.sbp.split(0)),
                    _global(rng.integers(0, 200, B), flow.sbp.split(0)))
        assert "momentum_buf" not in slots
        if step == 1:  # the first step's momentum went back into the table rows of its sample
            np.testing.assert_array_equal(head.weight_mom.to_local().numpy()[first], after_first)
        loss.backward()
        table_rows = head.weight_mom.to_local().numpy()[head.sampled_classes]
        np.testing.assert_array_equal(slots["momentum_buf"].to_local().numpy(), table_rows)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == 0:
            first, after_first = head.sampled_classes, slots["momentum_buf"].to_local().numpy().copy()
            assert np.abs(after_first).max() > 0
    assert set(first) != set(head.sampled_classes)  # the second step put other classes' rows in the slot


def test_partial_fc_unsampled_rows_are_bit_identical_without_binding() -> None:
    classes = 200
    head = build_head({"loss": "cosface", "margins": None, "fc_mode": "partial_fc", "sample_rate": 0.1,
                       "num_classes": classes, "embedding_size": E, "batch_size": B}, all_ranks_placement("cpu"))
    opt = flow.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = head.weight.to_local().numpy().copy()
    rng = np.random.default_rng(4)
    _pfc_step(head, opt, rng.normal(size=(B, E)).astype(np.float32), rng.integers(0, classes, B))
    sampled = head.sampled_classes
    after = head.state_dict()["weight"].to_local().numpy()
    unsampled = np.setdiff1d(np.arange(classes), sampled)
    assert np.array_equal(after[unsampled], before[unsampled])
    assert np.all(np.any(after[sampled] != before[sampled], axis=1))
    assert [name for name, _ in head.named_parameters()] == ["weight_activated"]


@pytest.mark.parametrize("fc_mode", ["data_parallel", "model_parallel"])
def test_head_runs_in_graph_mode_like_eager(fc_mode: str) -> None:
    """nn.Graph forward/backward/SGD step gives the eager loss and the eager updated weight."""
    x, labels, w, b = _data(5)
    gx, glabels = _global(x, flow.sbp.split(0)), _global(labels, flow.sbp.split(0))
    heads = []
    for _ in range(2):
        head = _head({"loss": "arcface", "fc_mode": fc_mode})
        _set(head.weight, w)
        heads.append((head, flow.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)))
    (eager, eager_opt), (graphed, graph_opt) = heads

    class Step(flow.nn.Graph):
        def __init__(self) -> None:
            super().__init__()
            self.head = graphed
            self.add_optimizer(graph_opt)

        def build(self, emb, lab):  # noqa: ANN001, ANN202
            loss = self.head(emb, lab)
            loss.backward()
            return loss

    graph_loss = Step()(gx, glabels)
    eager_loss = eager(gx, glabels)
    eager_loss.backward()
    eager_opt.step()
    as_np = lambda t: t.to_global(sbp=flow.sbp.broadcast).to_local().numpy()  # noqa: E731
    assert float(as_np(graph_loss)) == pytest.approx(float(as_np(eager_loss)), rel=1e-5)
    np.testing.assert_allclose(as_np(graphed.weight), as_np(eager.weight), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fc_mode", ["model_parallel", "partial_fc"])
def test_checkpoint_from_another_world_size_loads(fc_mode: str) -> None:
    """A class table saved with padding rows (e.g. 2 ranks: 14 rows for 13 classes) loads into 1 rank."""
    source = _head({"fc_mode": fc_mode, "batch_size": B})
    state = source.state_dict()
    padded = np.concatenate([state["weight"].to_local().numpy(), np.zeros((1, E), np.float32)])
    state["weight"] = _global(padded, state["weight"].sbp)
    target = _head({"fc_mode": fc_mode, "batch_size": B})
    target.load_state_dict(state)
    np.testing.assert_array_equal(target.weight.to_local().numpy(), padded[:C])


def test_partial_fc_adamw_tables_load_from_another_world_size() -> None:
    """AdamW's per-class moment tables are class tables too: saved with padding rows, they load like weights."""
    heads = []
    for _ in range(2):
        head = _head({"fc_mode": "partial_fc", "sample_rate": 0.5, "batch_size": B})
        head.bind_optimizer(flow.optim.AdamW(head.parameters(), lr=0.01))
        heads.append(head)
    source, target = heads
    state = source.state_dict()
    rng = np.random.default_rng(6)
    padded = {}
    for name in ("weight", "weight_exp_avg", "weight_exp_avg_sq"):
        padded[name] = np.concatenate([rng.random((C, E), dtype=np.float32), np.zeros((1, E), np.float32)])
        state[name] = _global(padded[name], state[name].sbp)
    target.load_state_dict(state)
    for name, values in padded.items():
        np.testing.assert_array_equal(getattr(target, name).to_local().numpy(), values[:C], err_msg=name)

