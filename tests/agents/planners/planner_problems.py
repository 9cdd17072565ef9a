"""Planning problems shared by the planner tests: finite-horizon LQR with its Riccati optimum,
and small, fast planners of each kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from agents.planners import CEMPlanner, GradientPlanner, HybridPlanner, MPPIPlanner, Planner


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Finite-horizon LQR: x[t+1] = A x[t] + B u[t], J = sum_t x'Qx + u'Ru + x_T' Qf x_T.


@dataclass(frozen=True)
class LQR:
    objective: Callable[[Tensor], Tensor]
    u_star: Tensor  # [T, A] optimal open-loop sequence from the Riccati recursion
    j_star: float  # x0' P_0 x0
    horizon: int
    action_dim: int


def lqr_problem(dtype: torch.dtype = torch.float64, device: str = "cpu") -> LQR:
    """A mildly unstable 3-state, 2-input system; well enough conditioned (Hessian condition
    number ~50) that a diagonal-Gaussian sampler can get close in a few hundred samples."""
    horizon, action_dim = 8, 2
    a = torch.tensor([[1.05, 0.1, 0.0], [0.0, 1.0, 0.1], [0.05, 0.0, 0.95]], dtype=torch.float64)
    b = torch.randn(3, action_dim, generator=gen(0), dtype=torch.float64) * 0.5
    q, r, qf = torch.eye(3), 0.5 * torch.eye(action_dim), 2.0 * torch.eye(3)
    q, r, qf = (m.to(torch.float64) for m in (q, r, qf))
    x0 = torch.tensor([2.0, -2.0, 1.0], dtype=torch.float64)

    # Backward Riccati recursion, then roll the optimal feedback forward from x0.
    p, gains = qf, []
    for _ in range(horizon):
        k = torch.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p = q + a.T @ p @ (a - b @ k)
        gains.append(k)
    x, u_star = x0, []
    for k in reversed(gains):
        u_star.append(-k @ x)
        x = a @ x + b @ u_star[-1]
    j_star = float(x0 @ p @ x0)

    mats = [m.to(device=device, dtype=dtype) for m in (a, b, q, r, qf, x0)]

    def objective(u: Tensor) -> Tensor:
        a_, b_, q_, r_, qf_, x0_ = mats
        x = x0_.expand(u.shape[1], -1)
        cost = torch.zeros(u.shape[1], dtype=u.dtype, device=u.device)
        for t in range(u.shape[0]):
            cost = cost + ((x @ q_) * x).sum(-1) + ((u[t] @ r_) * u[t]).sum(-1)
            x = x @ a_.T + u[t] @ b_.T
        return cost + ((x @ qf_) * x).sum(-1)

    u = torch.stack(u_star).to(device=device, dtype=dtype)
    return LQR(objective, u, j_star, horizon, action_dim)


def lqr_cost(problem: LQR, actions: Tensor) -> float:
    return float(problem.objective(actions.to(problem.u_star).unsqueeze(1))[0])


# Bounds of +-10 never bind: |u*| < 2.
BOUND = 10.0


# Bounds of +-10 never bind on the LQR problem: |u*| < 2.
BOUND = 10.0


def make_planner(
    kind: str,
    horizon: int,
    low: Tensor,
    high: Tensor,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> Planner:
    """Small, fast planners of each kind."""
    common = {"dtype": dtype, "device": device}
    if kind == "gradient":
        return GradientPlanner(horizon, low, high, iterations=15, candidates=4, lr=0.5, **common)
    if kind == "cem":
        return CEMPlanner(horizon, low, high, iterations=3, population=32, elites=4, **common)
    if kind == "mppi":
        return MPPIPlanner(horizon, low, high, iterations=3, samples=32, temperature=0.1, **common)
    sampler = CEMPlanner(horizon, low, high, iterations=2, population=16, elites=4, **common)
    refiner = GradientPlanner(horizon, low, high, iterations=5, lr=0.5, **common)
    return HybridPlanner(sampler, refiner, top_k=2)


PLANNER_KINDS = ["gradient", "cem", "mppi", "hybrid"]
