"""AdaFace, CurricularFace and MagFace: logits, running statistics and losses against numpy closed forms in every
fc_mode, their statistics as checkpointed buffers that a resumed run (eager or nn.Graph) continues, and their
config checks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from faceflow.runtime.flow import flow

from faceflow.errors import ConfigError
from faceflow.heads import build_head
from faceflow.heads.registry import margin_values
from faceflow.runtime.device import all_ranks_placement
from faceflow.train.config import validate_config
from faceflow.train.keys import DEFAULTS
from train_support import step_batches, tiny_config

B, E, C = 6, 8, 13
ADAPTIVE = ("adaface", "curricularface", "magface")
RUNNING = {"adaface": {"batch_mean": 20.0, "batch_std": 100.0}, "curricularface": {"t": 0.0}, "magface": {}}


def numpy_adaface(cos, labels, norms, m, h, s, t_alpha, batch_mean=20.0, batch_std=100.0, eps=1e-3):
    """AdaFace's logits and its updated (mean, std), float64 (Kim et al. 2022, the paper's head.py)."""
    safe = np.clip(norms, 0.001, 100)
    mean = t_alpha * safe.mean() + (1 - t_alpha) * batch_mean
    std = t_alpha * safe.std(ddof=1) + (1 - t_alpha) * batch_std
    z = np.clip(h * (safe - mean) / (std + eps), -1, 1)
    cos = np.clip(cos, -1 + eps, 1 - eps)
    rows = np.arange(len(labels))
    theta = np.arccos(cos[rows, labels])
    logits = s * cos
    logits[rows, labels] = s * np.cos(np.clip(theta - m * z, eps, math.pi - eps)) - s * (m + m * z)
    return logits, {"batch_mean": mean, "batch_std": std}


def numpy_curricularface(cos, labels, norms, m, s, t=0.0):
    """CurricularFace's logits and its updated t (Huang et al. 2020, the authors' head), float64."""
    rows = np.arange(len(labels))
    target = cos[rows, labels]
    shifted = target * np.cos(m) - np.sqrt(1 - target**2) * np.sin(m)
    final = np.where(target > np.cos(math.pi - m), shifted, target - np.sin(math.pi - m) * m)
    t = 0.01 * target.mean() + 0.99 * t
    out = np.where(cos > shifted[:, None], cos * (t + cos), cos)
    out[rows, labels] = final
    return s * out, {"t": t}


def numpy_magface(cos, labels, norms, s, l_a, u_a, l_m, u_m, lambda_g):
    """MagFace's logits (Meng et al. 2021), float64; the regulariser is `numpy_magface_penalty`."""
    a = np.clip(norms, l_a, u_a)
    margin = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    rows = np.arange(len(labels))
    target = cos[rows, labels]
    shifted = np.cos(np.arccos(target) + margin)
    out = cos.copy()
    out[rows, labels] = np.where(target > np.cos(math.pi - margin), shifted,
                                 target - np.sin(math.pi - margin) * margin)
    return s * out, {}


def numpy_magface_penalty(norms, u_a, l_a, lambda_g, **_):
    a = np.clip(norms, l_a, u_a)
    return lambda_g * np.mean(1 / a + a / u_a**2)


CLOSED_FORMS = {"adaface": numpy_adaface, "curricularface": numpy_curricularface, "magface": numpy_magface}


def numpy_loss(loss: str, x: np.ndarray, labels: np.ndarray, w: np.ndarray, margins: dict, **running):
    """(mean cross entropy + penalty, updated running statistics) for embeddings `x` and class weights `w`."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    cos = np.clip((x / norms[:, None]) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T, -1 + 1e-7, 1 - 1e-7)
    logits, updated = CLOSED_FORMS[loss](cos, labels, norms, **margins, **running)
    z = logits - logits.max(axis=1, keepdims=True)
    value = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels])
    if loss == "magface":
        value += numpy_magface_penalty(norms, **margins)
    return float(value), updated


def _global(array: np.ndarray, sbp=flow.sbp.broadcast) -> flow.Tensor:
    placement = all_ranks_placement("cpu")
    return flow.tensor(array, placement=placement, sbp=flow.sbp.broadcast).to_global(sbp=sbp)


def _head(loss: str, fc_mode: str = "data_parallel", margins: dict | None = None):
    config = {"loss": loss, "margins": margins, "fc_mode": fc_mode, "sample_rate": 1.0, "num_classes": C,
              "embedding_size": E, "batch_size": B}
    return build_head(config, all_ranks_placement("cpu"))


def _set_weight(head, w: np.ndarray) -> None:
    with flow.no_grad():
        head.weight.copy_(_global(w, head.weight.sbp))


def _data(seed: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return ((rng.normal(size=(B, E)) * scale).astype(np.float32), rng.integers(0, C, B),
            rng.normal(size=(C, E)).astype(np.float32))


def _scalar(tensor: flow.Tensor) -> float:
    return float(tensor.to_global(sbp=flow.sbp.broadcast).to_local().numpy().reshape(-1)[0])


@pytest.mark.parametrize("loss", ADAPTIVE)
def test_margin_logits_and_statistics_equal_numpy_closed_form(loss: str) -> None:
    rng = np.random.default_rng(1)
    cos = rng.uniform(-0.99, 0.99, (B, C))
    cos[0, :] = -0.995  # a target past pi - m: the fallback branch
    labels = rng.integers(0, C, B)
    norms = rng.uniform(5, 120, B)
    margins = margin_values(loss, None)
    margin = _head(loss).margins
    expected, updated = CLOSED_FORMS[loss](cos, labels, norms, **margins)
    target_cos = cos[np.arange(B), labels]
    target, others = margin(_global(cos.astype(np.float32)), _global(target_cos.astype(np.float32)),
                            _global(norms.astype(np.float32)))
    got = others.to_local().numpy().astype(np.float64)
    got[np.arange(B), labels] = target.to_local().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-3)
    for name, value in updated.items():
        assert _scalar(getattr(margin, name)) == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("fc_mode", ["data_parallel", "model_parallel", "partial_fc"])
@pytest.mark.parametrize("loss", ADAPTIVE)
def test_loss_and_running_statistics_equal_numpy_over_steps(loss: str, fc_mode: str) -> None:
    """Two training forwards: each loss equals numpy's with the statistics numpy carries from the first."""
    head = _head(loss, fc_mode)
    margins = margin_values(loss, None)
    running = dict(RUNNING[loss])
    w = _data(0, scale=1.0)[2]
    _set_weight(head, w)  # once: Partial FC writes its sampled rows back over the table at each forward
    for step in range(2):
        x, labels, _ = _data(step, scale=4.0 + 20 * step)
        value = head(_global(x, flow.sbp.split(0)), _global(labels, flow.sbp.split(0)))
        expected, running = numpy_loss(loss, x, labels, w, margins, **running)
        assert _scalar(value) == pytest.approx(expected, rel=1e-4)
        for name, number in running.items():
            assert _scalar(getattr(head.margins, name)) == pytest.approx(number, rel=1e-5)


@pytest.mark.parametrize("loss", ["adaface", "curricularface"])
def test_statistics_stay_in_eval_and_round_trip_through_the_state_dict(loss: str) -> None:
    head = _head(loss)
    x, labels, w = _data(3, scale=10.0)
    head(_global(x, flow.sbp.split(0)), _global(labels, flow.sbp.split(0)))
    state = head.state_dict()
    names = [f"margins.{name}" for name in RUNNING[loss]]
    assert set(names) <= set(state) and all(_scalar(state[n]) != RUNNING[loss][n[8:]] for n in names)
    head.eval()
    head(_global(x, flow.sbp.split(0)), _global(labels, flow.sbp.split(0)))
    assert all(_scalar(head.state_dict()[n]) == _scalar(state[n]) for n in names)
    fresh = _head(loss)
    fresh.load_state_dict(state)
    assert all(_scalar(fresh.state_dict()[n]) == _scalar(state[n]) for n in names)


def _radial_gradient(head, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d loss / d |x| of each embedding (the gradient's component along x)."""
    embeddings = _global(x, flow.sbp.split(0))
    embeddings.requires_grad = True
    head(embeddings, _global(labels, flow.sbp.split(0))).backward()
    grad = embeddings.grad.to_global(sbp=flow.sbp.broadcast).to_local().numpy()
    assert np.all(np.isfinite(grad))
    return np.sum(grad * x, axis=1) / np.linalg.norm(x, axis=1)


def test_magface_loss_depends_on_the_norm_inside_its_range_only() -> None:
    """The margin and regulariser read a = clip(norm, l_a, u_a): a gradient along x for norms in [10, 110],
    none below l_a (there only the cosines, which ignore the norm, depend on x)."""
    x, labels, w = _data(4, scale=1.0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    for norm, moves in ((5.0, False), (40.0, True)):
        head = _head("magface")
        _set_weight(head, w)
        radial = np.abs(_radial_gradient(head, x * norm, labels))
        assert (radial.min() > 1e-4) if moves else (radial.max() < 1e-5), (norm, radial)


@pytest.mark.parametrize("loss,overrides,message", [
    ("adaface", {"t_alpha": 2.0}, r"margins\.t_alpha: loss adaface needs t_alpha <= 1, got 2"),
    ("adaface", {"s": 0.0}, r"margins\.s: loss adaface needs s > 0, got 0"),
    ("adaface", {"m1": 1.0}, r"margins\.m1: loss adaface takes m, h, s, t_alpha"),
    ("magface", {"u_a": 5.0}, r"margins\.u_a: loss magface needs u_a > l_a \(10\), got 5"),
    ("magface", {"l_a": 120.0}, r"margins\.u_a: loss magface needs u_a > l_a \(120\), got 110")])
def test_bad_adaptive_margins_are_refused_by_the_config_check(loss: str, overrides: dict, message: str) -> None:
    """The declared bounds are checked when the config is read, before any head is built, with the key named."""
    base = {**DEFAULTS, "max_steps": 5, "num_classes": 4, "num_images": 20, "graph": False}
    with pytest.raises(ConfigError, match=f"^{message}$"):
        validate_config({**base, "loss": loss, "margins": overrides})
    with pytest.raises(ConfigError, match=f"^{message}$"):
        _head(loss, margins=overrides)


@pytest.mark.parametrize("loss", ["adaface", "curricularface"])
def test_graph_steps_carry_the_statistics_as_eager_steps_do(tmp_path, loss: str) -> None:
    """nn.Graph keeps no in-place buffer write: the compiled step hands the new statistics out and they are
    written back, so 4 graph steps give the eager losses and statistics, and a resumed graph run continues them."""
    from faceflow.train.engine import Trainer

    def train(name: str, steps: int, graph: bool) -> Trainer:
        config = tiny_config(loss=loss, margins={"s": 8.0}, max_steps=steps, checkpoint_every=2, graph=graph)
        trainer = Trainer(config, tmp_path / name, batches=step_batches)
        trainer.run()
        return trainer

    eager, graph = train("eager", 4, False), train("graph", 4, True)
    first, resumed = train("split", 2, True), train("split", 4, True)
    assert graph.losses == pytest.approx(eager.losses, rel=5e-3)  # graph and eager kernels round apart
    assert first.losses + resumed.losses == pytest.approx(graph.losses, rel=1e-5)
    for name, initial in RUNNING[loss].items():
        end = _scalar(getattr(eager.head.margins, name))
        moved = abs(end - initial)
        assert moved > 0
        for trainer in (graph, resumed):  # without the write-back a graph's statistic stays at `initial`
            assert abs(_scalar(getattr(trainer.head.margins, name)) - end) < 0.02 * moved, name


@pytest.mark.parametrize("loss", ["adaface", "curricularface"])
def test_resumed_tiny_run_continues_the_statistics(tmp_path, loss: str) -> None:
    """2 steps + resume + 2 steps == 4 steps in one go: same losses, same running statistics at the end."""
    from faceflow.train.engine import Trainer

    def train(name: str, steps: int) -> Trainer:
        config = tiny_config(loss=loss, margins={"s": 8.0}, max_steps=steps, checkpoint_every=2)
        trainer = Trainer(config, tmp_path / name, batches=step_batches)
        trainer.run()
        return trainer

    whole = train("whole", 4)
    first, resumed = train("split", 2), train("split", 4)
    assert len(resumed.losses) == 2
    assert first.losses + resumed.losses == pytest.approx(whole.losses, rel=1e-5)
    for name, initial in RUNNING[loss].items():
        end = _scalar(getattr(whole.head.margins, name))
        assert end != initial and _scalar(getattr(resumed.head.margins, name)) == pytest.approx(end, rel=1e-6)
    saved = flow.load(str(tmp_path / "split" / "checkpoints" / "step_000002" / "head"))
    assert all(f"margins.{name}" in saved for name in RUNNING[loss])
