"""The interfaces between the talk's modules: world model, cost, actor and planner.

Each is a structural `Protocol`, so a hand-written dynamics, a scripted actor or a third-party
planner plugs in without inheriting from anything here. Tensors are time-major `[T, B, ...]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Generator, Tensor

CostFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""`cost(state [..., S], action [..., A], next_state [..., S]) -> [...]`."""
TerminationFn = Callable[[Tensor], Tensor]
"""`terminated(next_state [..., S]) -> bool [...]`."""
OutcomesFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""`outcomes(obs [N, S], action [N, A]) -> [M, N, S]`: every possible next observation."""
ValueFn = Callable[[Tensor], Tensor]
"""Cost-to-go beyond a horizon: `value(state [..., S]) -> [...]` (e.g. the critic's)."""
Objective = Callable[[Tensor], Tensor]
"""What a planner minimises: candidate actions `[T, N, A]` -> cost `[N]`."""
BatchObjective = Callable[[Tensor], Tensor]
"""E independent problems at once (one per env): candidate actions `[T, E, N, A]` -> cost
`[E, N]`, problem e's cost depending only on its own candidates."""
Generators = dict[str, torch.Generator | np.random.Generator]
"""Named random number generators of a component (what a resumed run must restore)."""


class WorldModel(Protocol):
    """What imagination needs of a model; `ForwardModel` is one, tests use hand-written ones."""

    state_dim: int
    action_dim: int

    def step(
        self, s: Tensor, a: Tensor, z: Tensor | None = None, generator: Generator | None = None
    ) -> Tensor:
        """s [..., S], a [..., A], z [..., Z] (None: drawn from the prior) -> s' [..., S]."""
        ...

    def sample_prior(self, *shape: int, generator: Generator | None = None) -> Tensor:
        """z ~ p(z) of shape [*shape, Z]."""
        ...


@dataclass(frozen=True)
class Decision:
    """What an actor did at one step (for logging). Costs are NaN for actors that do not plan."""

    action: np.ndarray  #: [A] executed action, normalised units
    planned_cost: float  #: the predicted cost of the whole plan
    planned_step_cost: float  #: predicted cost of the first step alone
    seconds: float  #: wall time of the decision
    fallback: bool  #: the actor's output was non-finite and its safe action was used


@runtime_checkable
class Actor(Protocol):
    """Turns observations into actions: the planner over the model, or the policy."""

    last: Decision | None
    """The latest decision (None before the first one of an episode)."""
    horizon: int
    """Steps its decisions look ahead (1 for an actor that does not plan)."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs [S] -> action [A], finite and within [-1, 1]."""
        ...

    def reset(self) -> None:
        """Forget the episode (warm starts, previous actions)."""
        ...

    def generators(self) -> Generators:
        """Its random number generators by name, for checkpoints."""
        ...


@dataclass(frozen=True)
class PlanResult:
    """Outcome of one planning call.

    Attributes:
        actions: `[T, A]` best sequence found, inside the action bounds.
        cost: objective value of `actions` (`inf` if no candidate had a finite cost).
        iterations: optimiser iterations actually run (fewer than the maximum on early stop).
    """

    actions: Tensor
    cost: float
    iterations: int


@runtime_checkable
class Planner(Protocol):
    """Anything that turns an objective into a plan of `horizon` actions."""

    horizon: int

    def plan(
        self, objective: Objective, init: Tensor | None = None, generator: Generator | None = None
    ) -> PlanResult:
        """Minimise `objective` over `[T, A]` action sequences.

        Args:
            objective: actions `[T, N, A]` -> cost `[N]`.
            init: `[T, A]` warm start (e.g. `shift_plan` of the previous plan); `None` means
                the middle of the action box.
            generator: source of all randomness; the same seed gives the same plan.
        """
        ...
