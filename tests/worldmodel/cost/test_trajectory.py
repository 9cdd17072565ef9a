"""The one trajectory cost: discount, the alive mask after a predicted termination, the terminal
value, the uncertainty penalty's hinge; and imagination with dropout off."""

import pytest
import torch
from torch import Tensor

from worldmodel.cost.trajectory import Trajectory, TrajectoryCost, alive_weights, imagine
from worldmodel.cost.uncertainty import UncertaintyPenalty
from worldmodel.forward.model import ForwardModel

T, B = 4, 3


def _trajectory() -> Trajectory:
    # s[t][..., 0] = t: the state's first coordinate counts the steps.
    states = torch.arange(T + 1.0)[:, None, None].expand(T + 1, B, 2).clone()
    return Trajectory(states, torch.zeros(T, B, 1), torch.zeros(T, B, 0))


def unit_cost(s: Tensor, a: Tensor, s_next: Tensor) -> Tensor:
    return torch.ones(s.shape[:-1])


def test_alive_weights_pay_the_terminating_step_and_nothing_after() -> None:
    continues = torch.tensor([[1.0], [0.0], [1.0]])
    assert alive_weights(continues)[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_discounted_costs_stop_after_a_predicted_termination_and_gate_the_value() -> None:
    ends_at_2 = lambda s: s[..., 0] >= 2  # noqa: E731  s[2] is terminal
    ten = lambda s: torch.full(s.shape[:-1], 10.0)  # noqa: E731
    terms = TrajectoryCost(unit_cost, ends_at_2, ten, gamma=0.5)(_trajectory())
    # c[0] + 0.5 c[1] (the step into the termination is paid), then nothing: no value either.
    torch.testing.assert_close(terms.total, torch.full((B,), 1.5))
    assert terms.value is not None and torch.all(terms.value == 0)
    alive = TrajectoryCost(unit_cost, None, ten, gamma=0.5)(_trajectory())
    torch.testing.assert_close(alive.total, torch.full((B,), 1 + 0.5 + 0.25 + 0.125 + 10 / 16))
    explicit = TrajectoryCost(unit_cost, None, ten, value_discount=2.0)(_trajectory())
    torch.testing.assert_close(explicit.total, torch.full((B,), 4 + 20.0))


class FixedPenalty(UncertaintyPenalty):
    """U[t] = t for every trajectory: the hinge and the weighting are then known."""

    def __init__(self) -> None:
        super().__init__(model=None, masks=2, threshold=1.0)  # type: ignore[arg-type]
        self.mean, self.std = torch.zeros(T), torch.full((T,), 0.5)

    def raw(self, s0: Tensor, actions: Tensor, z: Tensor | None = None) -> Tensor:
        return torch.arange(float(actions.shape[0]))[:, None].expand(-1, s0.shape[0])


def test_the_uncertainty_hinge_is_charged_where_the_plan_is_alive() -> None:
    penalty = FixedPenalty()
    # (U - 0) / 0.5 - 1 = 2t - 1, hinged: [0, 1, 3, 5]
    torch.testing.assert_close(penalty(penalty.raw(torch.zeros(B, 2), torch.zeros(T, B, 1)))[:, 0],
                               torch.tensor([0.0, 1.0, 3.0, 5.0]))  # fmt: skip
    ends_at_3 = lambda s: s[..., 0] >= 3  # noqa: E731
    cost = TrajectoryCost(unit_cost, ends_at_3, penalty=penalty, penalty_weight=2.0)
    terms = cost(_trajectory())
    # steps 0, 1, 2 are alive: costs 3 + 2 * (0 + 1 + 3)
    torch.testing.assert_close(terms.total, torch.full((B,), 3 + 2.0 * 4))
    measured = TrajectoryCost(unit_cost, penalty=penalty)(_trajectory())
    torch.testing.assert_close(measured.total, torch.full((B,), 4.0))  # measured, not charged
    assert measured.penalty is not None and measured.penalty.sum() > 0


def test_penalty_weight_needs_a_penalty_and_gamma_a_range() -> None:
    with pytest.raises(ValueError):
        TrajectoryCost(unit_cost, penalty_weight=1.0)
    with pytest.raises(ValueError):
        TrajectoryCost(unit_cost, gamma=0.0)


def test_imagination_runs_the_mean_model_and_restores_the_trainers_mode() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=0, hidden=16, layers=2, dropout=0.5).train()
    policy = torch.nn.Linear(2, 1)
    g = torch.Generator().manual_seed(1)
    start, z = torch.randn(5, 2, generator=g), torch.zeros(T, 5, 0)
    first = imagine(model, policy, start, z)
    second = imagine(model, policy, start, z)
    torch.testing.assert_close(first.states, second.states, rtol=0, atol=0)  # no dropout draws
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        model.eval()
        s = start
        for t in range(T):
            s = model.step(s, policy(s), z[t])
        torch.testing.assert_close(first.states[-1].detach(), s)


class ZPenalty(FixedPenalty):
    """U[t] = z[t]: checks the trajectory's own latents reach the penalty."""

    def raw(self, s0: Tensor, actions: Tensor, z: Tensor | None = None) -> Tensor:
        assert z is not None
        return z[..., 0]


def test_each_term_reads_its_own_step_of_the_trajectory() -> None:
    """c(s[t], a[t], s[t+1]) = s[t] + 10 s[t+1] and V(s[T]) = s[T], with s[t] = t: the sums
    say which states each term saw; the penalty sees the trajectory's z."""
    trajectory = _trajectory()
    cost = lambda s, a, s2: s[..., 0] + 10 * s2[..., 0]  # noqa: E731
    value = lambda s: s[..., 0]  # noqa: E731
    terms = TrajectoryCost(cost, value=value, value_discount=1.0)(trajectory)
    steps = sum(t + 10 * (t + 1) for t in range(T))
    torch.testing.assert_close(terms.total, torch.full((B,), float(steps + T)))
    torch.testing.assert_close(terms.costs[:, 0], torch.tensor([10.0, 21.0, 32.0, 43.0]))
    assert torch.all(terms.continues == 1) and terms.alive.shape == (T + 1, B)
    z = torch.full((T, B, 1), 3.0)  # U = 3 everywhere: (3 - 0) / 0.5 - 1 = 5 per step
    with_z = Trajectory(trajectory.states, trajectory.actions, z)
    charged = TrajectoryCost(cost, penalty=ZPenalty(), penalty_weight=1.0)(with_z)
    torch.testing.assert_close(charged.total, torch.full((B,), float(steps + 5 * T)))


def test_a_shorter_rollout_is_normalised_by_its_own_steps_statistics() -> None:
    penalty = FixedPenalty()
    penalty.mean = torch.tensor([0.0, 1.0, 2.0, 3.0])
    short = penalty.normalized(torch.ones(2, B))  # steps 0 and 1 only
    torch.testing.assert_close(short[:, 0], torch.tensor([2.0, 0.0]))
    with pytest.raises(ValueError, match="rollout of 5 steps but calibrated on 4"):
        penalty.normalized(torch.ones(5, B))


def test_the_penalty_measures_the_trajectorys_own_latents() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=16, layers=2, dropout=0.3)
    with torch.no_grad():
        model.decoder[0].weight.mul_(10.0)
    penalty = UncertaintyPenalty(model, masks=8)
    s0, actions = torch.zeros(3, 2), torch.zeros(T, 3, 1)
    spread = []
    for scale in (0.0, 3.0):
        torch.manual_seed(1)  # the same dropout masks for both
        spread.append(penalty.raw(s0, actions, torch.full((T, 3, 2), scale)))
    assert not torch.allclose(spread[0], spread[1])


def test_detach_keeps_every_tensors_values_and_drops_the_graph() -> None:
    base = _trajectory()
    leaves = [t.clone().requires_grad_() for t in (base.states, base.actions, torch.ones(T, B, 2))]
    trajectory = Trajectory(*(2 * t for t in leaves))
    detached = trajectory.detach()
    for before, after in zip(
        (trajectory.states, trajectory.actions, trajectory.z),
        (detached.states, detached.actions, detached.z),
        strict=True,
    ):
        assert before.requires_grad and not after.requires_grad
        torch.testing.assert_close(after, before.detach(), rtol=0, atol=0)


def test_imagination_steps_under_the_latents_it_is_given() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=16, layers=2, dropout=0.0)
    policy = torch.nn.Linear(2, 1)
    g = torch.Generator().manual_seed(1)
    start, z = torch.randn(5, 2, generator=g), 3 * torch.randn(T, 5, 2, generator=g)
    trajectory = imagine(model, policy, start, z)
    with torch.no_grad():
        s = start
        for t in range(T):
            s = model.step(s, policy(s), z[t])
            torch.testing.assert_close(trajectory.states[t + 1].detach(), s)
    assert trajectory.z is z
    other = imagine(model, policy, start, -z)
    assert not torch.allclose(other.states[-1], trajectory.states[-1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 0.0}, r"^need gamma in \(0, 1\] and penalty_weight >= 0$"),
        ({"gamma": 1.5}, r"need gamma in \(0, 1\]"),
        ({"gamma": -0.5}, r"need gamma in \(0, 1\]"),
        ({"penalty_weight": -0.1}, "penalty_weight >= 0"),
        ({"penalty_weight": 1.0}, "^penalty_weight > 0 needs an UncertaintyPenalty$"),
    ],
)
def test_gamma_outside_the_unit_interval_and_negative_weights_are_refused(
    kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrajectoryCost(unit_cost, **kwargs)


def test_gamma_of_one_and_a_weight_of_zero_are_accepted() -> None:
    terms = TrajectoryCost(unit_cost, gamma=1.0, penalty_weight=0.0)(_trajectory())
    torch.testing.assert_close(terms.total, torch.full((B,), float(T)))


def test_continues_and_discounts_are_in_the_costs_dtype_at_its_precision() -> None:
    base = _trajectory()
    trajectory = Trajectory(base.states.double(), base.actions.double(), base.z.double())
    cost = lambda s, a, s2: torch.ones(s.shape[:-1], dtype=torch.float64)  # noqa: E731
    ends_at_3 = lambda s: s[..., 0] >= 3  # noqa: E731
    terms = TrajectoryCost(cost, ends_at_3, gamma=0.9)(trajectory)
    assert terms.continues.dtype == terms.alive.dtype == terms.weights.dtype == torch.float64
    assert terms.continues[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert terms.alive[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    expected = torch.tensor([1.0, 0.9, 0.81, 0.0], dtype=torch.float64)
    # float64 discounts: a float32 gamma ** t would be off by ~1e-8.
    torch.testing.assert_close(terms.weights[:, 0], expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(terms.total, torch.full((B,), 2.71, dtype=torch.float64),
                               rtol=1e-13, atol=0)  # fmt: skip


class StartPenalty(FixedPenalty):
    """U[t] = s0[..., 0] + z[t][..., 0]: which start state and latents the penalty was given."""

    def raw(self, s0: Tensor, actions: Tensor, z: Tensor | None = None) -> Tensor:
        assert z is not None
        return s0[..., 0] + z[..., 0]


def test_the_penalty_replays_the_actions_from_the_trajectorys_first_state() -> None:
    base = _trajectory()  # s[0] = 0, s[1] = 1
    trajectory = Trajectory(base.states + 2.0, base.actions, torch.zeros(T, B, 1))
    terms = TrajectoryCost(unit_cost, penalty=StartPenalty())(trajectory)
    assert terms.uncertainty is not None
    torch.testing.assert_close(terms.uncertainty, torch.full((T, B), 2.0))


class SumZPenalty(FixedPenalty):
    """U[t] = sum of z[t]: computed from the latents (not a view of them), so it carries their
    graph exactly where gradients are on."""

    def raw(self, s0: Tensor, actions: Tensor, z: Tensor | None = None) -> Tensor:
        assert z is not None
        return z.sum(-1)


def _needs_grad(trajectory: Trajectory) -> Trajectory:
    return Trajectory(trajectory.states, trajectory.actions, torch.ones(T, B, 1).requires_grad_())


def test_a_measured_penalty_and_no_grad_mode_build_no_graph() -> None:
    trajectory = _needs_grad(_trajectory())
    measured = TrajectoryCost(unit_cost, penalty=SumZPenalty())(trajectory)
    assert measured.uncertainty is not None and measured.penalty is not None
    assert not measured.uncertainty.requires_grad and not measured.penalty.requires_grad
    charged = TrajectoryCost(unit_cost, penalty=SumZPenalty(), penalty_weight=1.0)
    assert charged(trajectory).penalty.requires_grad  # type: ignore[union-attr]
    with torch.no_grad():
        terms = charged(trajectory)
    assert not terms.penalty.requires_grad and not terms.uncertainty.requires_grad  # type: ignore[union-attr]


class InfinitePenalty(FixedPenalty):
    """U = inf: a rollout whose uncertainty overflowed."""

    def raw(self, s0: Tensor, actions: Tensor, z: Tensor | None = None) -> Tensor:
        return torch.full((actions.shape[0], s0.shape[0]), float("inf"))


def test_a_measured_penalty_never_enters_the_cost_even_when_infinite() -> None:
    terms = TrajectoryCost(unit_cost, penalty=InfinitePenalty())(_trajectory())
    assert terms.penalty is not None and torch.isinf(terms.penalty).all()
    torch.testing.assert_close(terms.total, torch.full((B,), float(T)))
