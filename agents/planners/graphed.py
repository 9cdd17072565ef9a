"""The gradient planner's decision as one CUDA graph: no kernel-launch overhead on a GPU.

A default decision is thousands of small kernels (Adam iterations x a 30-step unroll, forward and
backward); on a GPU their launch overhead, not arithmetic, sets the time. A CUDA graph records
the kernels once and replays them with one launch. What it can record: fixed shapes, a fixed
number of iterations (no early stop), no values read back to the host mid-decision, and inputs
in fixed buffers. `static_search` is the planner's Adam written that way; `GraphedSearch`
captures it per problem shape on CUDA and, anywhere else, runs it eagerly (the same numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from agents.planners.base import sanitize_cost
from agents.planners.gradient import GradientPlanner, objective_gradient
from worldmodel.types import Objective

# torch.optim.Adam's defaults, which GradientPlanner uses
_BETAS, _EPS = (0.9, 0.999), 1e-8


def static_search(
    planner: GradientPlanner, objective: Objective, starts: Tensor
) -> tuple[Tensor, Tensor]:
    """`planner.iterations` Adam steps from starts [T, N, A] with no early stop and no host
    sync: each candidate's best iterate [T, N, A] and its cost [N].

    The same arithmetic as `GradientPlanner.optimize` run with a patience beyond its iterations
    (Adam as torch.optim.Adam computes it, the learning-rate decay, gradient conditioning and
    projection onto the box); every iteration's constants are Python numbers, so a CUDA graph
    records them.
    """
    x = planner._clip(starts.to(device=planner.device, dtype=planner.dtype))
    mid = 0.5 * (planner.action_low + planner.action_high)
    x = torch.where(torch.isfinite(x), x, mid)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    best_x = x.clone()
    best_cost = torch.full(x.shape[1:2], math.inf, device=x.device, dtype=x.dtype)
    lr = planner.lr
    for step in range(planner.iterations + 1):
        if step == planner.iterations:
            with torch.no_grad():
                cost = objective(x)
        else:
            cost, grad = objective_gradient(objective, x)
        cost = sanitize_cost(cost.to(x.dtype))
        improved = cost < best_cost
        best_cost = torch.where(improved, cost, best_cost)
        best_x = torch.where(improved[:, None], x, best_x)
        if step == planner.iterations:
            break
        grad = planner._condition(grad)
        # Rounded as torch.optim.Adam rounds (lerp, addcmul, addcdiv) and ExponentialLR
        # decays (one multiplication per step): a decision replays the eager one's numbers.
        m = torch.lerp(m, grad, 1 - _BETAS[0])
        v = torch.addcmul(v * _BETAS[1], grad, grad, value=1 - _BETAS[1])
        correction1, correction2 = 1 - _BETAS[0] ** (step + 1), 1 - _BETAS[1] ** (step + 1)
        denom = v.sqrt() / math.sqrt(correction2) + _EPS
        x = torch.addcdiv(x, m, denom, value=-lr / correction1)
        x = planner._clip(torch.nan_to_num(x, nan=0.0))
        lr *= planner.lr_decay
    return best_x, best_cost


ObjectiveBuilder = Callable[[Tensor, Tensor], Objective]
"""`build(states [E, S], z [T, K, Z]) -> objective over [T, E * N, A]`: what a decision plans."""


class GraphedSearch:
    """`static_search` of `build(states, z)` from given starts, captured as a CUDA graph per
    input shape where the planner lives on CUDA, else run eagerly.

    Each call copies its inputs into the graph's buffers and replays it; the outputs are the
    graph's buffers, valid until the next call (clone them to keep them).
    """

    def __init__(self, planner: GradientPlanner, build: ObjectiveBuilder) -> None:
        self.planner, self.build = planner, build
        self.graphed = planner.device.type == "cuda" and torch.cuda.is_available()
        self._graphs: dict[tuple, tuple] = {}

    def __call__(self, states: Tensor, z: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        """Best iterates [T, N, A] and costs [N] from starts [T, N, A], states [E, S], z."""
        if not self.graphed:
            return static_search(self.planner, self.build(states, z), starts)
        key = (tuple(states.shape), tuple(z.shape), tuple(starts.shape))
        if key not in self._graphs:
            self._graphs[key] = self._capture(states, z, starts)
        graph, inputs, outputs = self._graphs[key]
        for buffer, value in zip(inputs, (states, z, starts), strict=True):
            buffer.copy_(value)
        graph.replay()
        return outputs

    def _capture(self, states: Tensor, z: Tensor, starts: Tensor) -> tuple:
        """Warm up on a side stream (allocations, autograd's lazy state), then record."""
        inputs = tuple(t.detach().clone() for t in (states, z, starts))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                static_search(self.planner, self.build(inputs[0], inputs[1]), inputs[2])
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = static_search(self.planner, self.build(inputs[0], inputs[1]), inputs[2])
        return graph, inputs, outputs
