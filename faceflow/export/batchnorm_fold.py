"""Exact rewrites of inference BatchNorm statistics between frameworks' conventions.

Inference BN is y = gamma * (x - mean) / sqrt(var + eps) + beta. MXNet's `fix_gamma=True` layers
(InsightFace's `fc1`) run with gamma = 1, and MXNet/OneFlow layers may use different eps; both are
absorbed into `mean`/`var` (and, for a negative gamma, the sign of the layer feeding the BN).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UnitGammaStats:
    """BN statistics that give the same output with gamma = 1; `sign` (+1/-1) multiplies the BN input."""

    mean: np.ndarray
    var: np.ndarray
    sign: np.ndarray


def shift_eps(var: np.ndarray, eps_from: float, eps_to: float) -> np.ndarray:
    """Running variance for a BN with epsilon `eps_to` that equals one with `eps_from`."""
    return (var.astype(np.float64) + eps_from - eps_to).astype(np.float32)


def fold_gamma(gamma: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float, layer: str) -> UnitGammaStats:
    """Statistics that reproduce `gamma` with gamma fixed to 1: var' + eps = (var + eps) / gamma^2."""
    gamma = gamma.astype(np.float64)
    if np.any(gamma == 0):
        raise ValueError(f"{layer}: gamma has zeros; it cannot become a fix_gamma BatchNorm")
    sign = np.sign(gamma)
    new_var = (var.astype(np.float64) + eps) / gamma**2 - eps
    return UnitGammaStats(mean=(sign * mean).astype(np.float32), var=new_var.astype(np.float32),
                          sign=sign.astype(np.float32))


def unit_gamma_head(state: dict[str, np.ndarray], eps: float, bn: str = "fc1", linear: str = "pre_fc1") -> None:
    """Rewrite `state` so BatchNorm `bn` (faceflow's frozen-gamma embedding BN) has gamma 1 and gives the same
    output: its statistics absorb gamma, and a negative gamma flips the matching rows of `linear` feeding it."""
    gamma = state[f"{bn}.weight"]
    if np.allclose(gamma, 1.0, rtol=0, atol=1e-7):
        return
    folded = fold_gamma(gamma, state[f"{bn}.running_mean"], state[f"{bn}.running_var"], eps, bn)
    state[f"{bn}.weight"] = np.ones_like(gamma)
    state[f"{bn}.running_mean"], state[f"{bn}.running_var"] = folded.mean, folded.var
    state[f"{linear}.weight"] = state[f"{linear}.weight"] * folded.sign[:, None]
    state[f"{linear}.bias"] = state[f"{linear}.bias"] * folded.sign
