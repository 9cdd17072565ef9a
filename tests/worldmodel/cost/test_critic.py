"""Critic: TD(lambda) targets against brute force, the value of a discounted linear-quadratic
problem (known from the Lyapunov equation), the slow target copy and the real-data entry point."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from worldmodel.cost.critic import Critic, CriticLearner, td_lambda_targets
from worldmodel.data.store import Stats, Window


def brute_force_lambda_return(
    costs: Tensor, values: Tensor, continues: Tensor, gamma: float, lambda_: float
) -> Tensor:
    """Textbook form: (1 - lambda) sum_n lambda^(n-1) G^(n) + lambda^(T-t-1) G^(T-t)."""
    horizon, batch = costs.shape
    out = torch.zeros(horizon, batch, dtype=costs.dtype)
    for t in range(horizon):
        for b in range(batch):

            def n_step(n: int, t: int = t, b: int = b) -> float:
                total, alive = 0.0, 1.0
                for k in range(n):
                    total += gamma**k * alive * float(costs[t + k, b])
                    alive *= float(continues[t + k, b])
                return total + gamma**n * alive * float(values[t + n, b])

            rest = horizon - t
            mix = sum((1 - lambda_) * lambda_ ** (n - 1) * n_step(n) for n in range(1, rest))
            out[t, b] = mix + lambda_ ** (rest - 1) * n_step(rest)
    return out


@pytest.mark.parametrize("lambda_", [0.0, 0.6, 1.0])
def test_td_lambda_targets_equal_brute_force_with_a_termination(lambda_: float) -> None:
    g = torch.Generator().manual_seed(0)
    horizon, batch, gamma = 6, 3, 0.9
    costs = torch.randn(horizon, batch, generator=g, dtype=torch.float64)
    values = torch.randn(horizon + 1, batch, generator=g, dtype=torch.float64)
    continues = torch.ones(horizon, batch, dtype=torch.float64)
    continues[2, 0] = 0.0  # s[3] of sample 0 is terminal: nothing after step 2 may count
    continues[5, 1] = 0.0  # terminal on the last step: no bootstrap from v[T]

    targets = td_lambda_targets(costs, values, continues, gamma, lambda_)

    torch.testing.assert_close(
        targets, brute_force_lambda_return(costs, values, continues, gamma, lambda_)
    )
    if lambda_ == 0.0:
        torch.testing.assert_close(targets, costs + gamma * continues * values[1:])
    if lambda_ == 1.0:
        discount = gamma ** torch.arange(3, dtype=torch.float64)
        torch.testing.assert_close(targets[0, 0], (discount * costs[:3, 0]).sum())


def test_td_lambda_targets_reject_mismatched_shapes() -> None:
    with pytest.raises(
        ValueError,
        match="^need costs \\[T, B\\], values \\[T\\+1, B\\], continues \\[T, B\\]; got ",
    ):
        td_lambda_targets(torch.zeros(4, 2), torch.zeros(4, 2), torch.ones(4, 2), 0.9, 0.5)


def test_critic_learns_the_value_of_a_discounted_linear_quadratic_problem() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[0.9, 0.2], [-0.1, 0.8]])  # closed loop (policy folded in), |eig| ~ 0.86
    q = torch.diag(torch.tensor([1.0, 0.5]))
    gamma = 0.9
    # V(x) = x'Px with P = Q + gamma A'PA (discounted Lyapunov equation), by fixed-point iteration.
    p = q.clone()
    for _ in range(500):
        p = q + gamma * a.T @ p @ a

    critic = Critic(2, hidden=64, layers=2)
    critic.set_normalization(
        Stats(torch.zeros(2), torch.full((2,), 0.6), torch.zeros(2), torch.ones(2)),
        value_scale=2.0,
    )
    learner = CriticLearner(critic, gamma=gamma, lambda_=0.8, tau=0.05, lr=3e-3)
    horizon, batch = 8, 128
    for _ in range(400):
        x = torch.rand(batch, 2, generator=g) * 2 - 1
        states = [x]
        for _ in range(horizon):
            states.append(states[-1] @ a.T)
        traj = torch.stack(states)  # [T+1, B, 2]
        costs = ((traj[:-1] @ q) * traj[:-1]).sum(-1)
        metrics = learner.update_imagined(traj, costs, torch.ones(horizon, batch))
    assert "skipped_updates" not in metrics

    angle = torch.linspace(0, 2 * torch.pi, 64)
    radius = torch.rand(64, generator=g) * 0.5 + 0.5
    test = torch.stack([angle.cos(), angle.sin()], -1) * radius[:, None]
    exact = ((test @ p) * test).sum(-1)
    with torch.no_grad():
        error = ((learner.value(test) - exact).abs() / exact).mean().item()
    assert error < 0.05, f"mean relative error of V {error:.3f}"


def test_target_is_a_polyak_copy_and_value_passes_gradients_to_states_only() -> None:
    torch.manual_seed(0)
    learner = CriticLearner(Critic(3, hidden=16), gamma=0.9, tau=0.25, lr=1e-2)
    before = [p.clone() for p in learner.target.parameters()]
    learner.update_imagined(torch.randn(5, 8, 3), torch.randn(4, 8), torch.ones(4, 8))
    for old, new, online in zip(
        before, learner.target.parameters(), learner.critic.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * online)

    states = torch.randn(6, 3, requires_grad=True)
    learner.value(states).sum().backward()
    assert states.grad is not None and torch.isfinite(states.grad).all()
    assert all(p.grad is None for p in learner.target.parameters())


def test_update_real_equals_update_imagined_on_the_same_transitions() -> None:
    g = torch.Generator().manual_seed(0)
    horizon, batch = 4, 8
    terminated = torch.zeros(horizon, batch, dtype=torch.bool)
    terminated[-1, :3] = True
    window = Window(
        obs=torch.randn(horizon + 1, batch, 3, generator=g),
        action=torch.rand(horizon, batch, 1, generator=g) * 2 - 1,
        reward=torch.randn(horizon, batch, generator=g),
        terminated=terminated,
    )

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return next_obs.square().sum(-1) + action.square().sum(-1) + 0.5 * obs[..., 0]

    learners = []
    for _ in range(4):
        torch.manual_seed(0)
        learners.append(CriticLearner(Critic(3, hidden=16), gamma=0.9, lr=1e-2))
    metrics = [
        learners[0].update_real(window),
        learners[1].update_imagined(window.obs, -window.reward, (~terminated).float()),
        learners[2].update_real(window, cost=cost),
    ]
    by_hand = cost(window.obs[:-1], window.action, window.obs[1:])
    metrics.append(learners[3].update_imagined(window.obs, by_hand, (~terminated).float()))
    # Adam's first step is about lr * sign(g): the weights hardly tell costs apart, the
    # metrics (mean target, loss) do.
    assert metrics[0] == metrics[1] and metrics[2] == metrics[3]
    first, second, third, fourth = (list(lr.critic.parameters()) for lr in learners)
    for x, y in zip(first, second, strict=True):
        torch.testing.assert_close(x, y)
    for x, y in zip(third, fourth, strict=True):
        torch.testing.assert_close(x, y)
    assert any(not torch.equal(x, z) for x, z in zip(first, third, strict=True))


def test_non_finite_costs_skip_the_update() -> None:
    torch.manual_seed(0)
    learner = CriticLearner(Critic(2, hidden=16))
    before = [p.clone() for p in learner.critic.parameters()]
    costs = torch.ones(3, 4)
    costs[1, 2] = float("nan")
    metrics = learner.update_imagined(torch.randn(4, 4, 2), costs, torch.ones(3, 4))
    assert metrics == {"skipped_updates": 1.0}
    assert all(torch.equal(x, y) for x, y in zip(before, learner.critic.parameters(), strict=True))


def test_td_targets_bootstrap_from_the_slow_target_not_the_online_net() -> None:
    torch.manual_seed(0)
    critic = Critic(2, hidden=8)
    learner = CriticLearner(critic, gamma=0.9, lambda_=0.0, tau=0.01)
    with torch.no_grad():
        critic.net[-1].bias.fill_(5.0)  # the online net now says V = 5 where the target says 0
    g = torch.Generator().manual_seed(1)
    states, costs = torch.randn(4, 16, 2, generator=g), torch.rand(3, 16, generator=g)
    continues = torch.ones(3, 16)
    with torch.no_grad():
        expected = costs + 0.9 * learner.target(states[1:])  # one-step TD on the slow copy
    metrics = learner.update_imagined(states, costs, continues)
    assert metrics["target"] == pytest.approx(expected.mean().item(), rel=1e-6)
    assert abs(metrics["target"] - (costs + 0.9 * 5.0).mean().item()) > 1.0


def test_critic_updates_are_counted_and_report_their_terms() -> None:
    torch.manual_seed(0)
    critic = Critic(2, hidden=8)
    critic.set_normalization(
        Stats(torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2)), value_scale=4.0
    )
    learner = CriticLearner(critic, gamma=0.9, lambda_=0.0)
    g = torch.Generator().manual_seed(1)
    states, costs = torch.randn(4, 8, 2, generator=g), torch.rand(3, 8, generator=g)
    continues = torch.ones(3, 8)
    with torch.no_grad():
        predicted = critic(states[:-1])
        targets = costs + 0.9 * learner.target(states[1:])
    metrics = learner.update_imagined(states, costs, continues)
    # The loss is measured in value_scale units: (prediction - target) / 4, squared, averaged.
    assert metrics["loss"] == pytest.approx((((predicted - targets) / 4.0) ** 2).mean().item())
    assert metrics["value"] == pytest.approx(predicted.mean().item())
    assert metrics["grad_norm"] > 0
    learner.update_imagined(states, costs, continues)
    assert learner.total_steps == 2 and learner.skipped_updates == 0
    nan = torch.full_like(costs, float("nan"))
    learner.update_imagined(states, nan, continues)
    learner.update_imagined(states, nan, continues)
    assert learner.skipped_updates == 2 and learner.total_steps == 2


@pytest.mark.parametrize(("gamma", "lambda_"), [(1.5, 0.5), (-0.1, 0.5), (0.9, 1.5), (0.9, -0.1)])
def test_td_lambda_targets_refuse_gamma_or_lambda_outside_0_1(gamma: float, lambda_: float) -> None:
    with pytest.raises(ValueError, match="^gamma and lambda_ must be in \\[0, 1\\], got "):
        td_lambda_targets(torch.zeros(3, 2), torch.zeros(4, 2), torch.ones(3, 2), gamma, lambda_)


def test_td_lambda_targets_at_gamma_0_are_the_costs_and_at_gamma_1_the_plain_sum() -> None:
    g = torch.Generator().manual_seed(0)
    costs = torch.randn(4, 3, generator=g, dtype=torch.float64)
    values = torch.randn(5, 3, generator=g, dtype=torch.float64)
    continues = torch.ones(4, 3, dtype=torch.float64)
    torch.testing.assert_close(td_lambda_targets(costs, values, continues, 0.0, 0.5), costs)
    monte_carlo = td_lambda_targets(costs, values, continues, 1.0, 1.0)
    # Undiscounted: G[0] = c0 + c1 + c2 + c3 + v[4].
    torch.testing.assert_close(monte_carlo[0], costs.sum(0) + values[-1])


def test_td_lambda_targets_from_bool_continues_equal_those_from_float_ones() -> None:
    g = torch.Generator().manual_seed(0)
    costs = torch.randn(5, 4, generator=g, dtype=torch.float64)
    values = torch.randn(6, 4, generator=g, dtype=torch.float64)
    alive = torch.rand(5, 4, generator=g) > 0.2
    from_bool = td_lambda_targets(costs, values, alive, 0.9, 0.7)
    from_float = td_lambda_targets(costs, values, alive.double(), 0.9, 0.7)
    # Exactly: a bool mask must not round gamma through float32 on the way.
    assert torch.equal(from_bool, from_float)


@pytest.mark.parametrize("dims", [(0, 8, 2), (2, 0, 2), (2, 8, 0), (-1, 8, 2)])
def test_a_critic_needs_positive_sizes(dims: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="^state_dim, hidden and layers must be positive$"):
        Critic(*dims)


def test_the_smallest_critic_is_accepted_and_starts_at_zero() -> None:
    critic = Critic(1, hidden=1, layers=1)
    assert critic.state_dim == 1 and Critic(3).state_dim == 3
    states = torch.randn(7, 1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(critic(states), torch.zeros(7))  # V = 0 before any update


def test_value_scale_must_be_positive() -> None:
    stats = Stats(torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2))
    critic = Critic(2, hidden=8)
    with pytest.raises(ValueError, match="^value_scale must be positive, got 0.0$"):
        critic.set_normalization(stats, value_scale=0.0)
    critic.set_normalization(stats, value_scale=0.5)  # below 1 is fine
    assert critic.value_scale.item() == 0.5


def test_the_critic_normalises_raw_states_and_scales_its_output() -> None:
    """A critic normalised by (mean m, std s) and scaled by k, at m + s x, is k times the same
    net without normalisation at x."""
    torch.manual_seed(0)
    plain = Critic(3, hidden=16)
    with torch.no_grad():
        plain.net[-1].weight.normal_()  # a non-zero head: V depends on the state
    scaled = Critic(3, hidden=16)
    scaled.load_state_dict(plain.state_dict())
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 3.0, 2.0])
    scaled.set_normalization(Stats(mean, std, torch.zeros(3), torch.ones(3)), value_scale=4.0)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(scaled(mean + std * x), 4.0 * plain(x))


@pytest.mark.parametrize(
    "bad",
    [
        {"gamma": 0.0}, {"gamma": 1.5}, {"lambda_": -0.1}, {"lambda_": 1.5}, {"tau": 0.0},
        {"tau": 1.5}, {"gamma": 1.5, "tau": 0.5}, {"lambda_": 1.5, "gamma": 0.5},
    ],
)  # fmt: skip
def test_the_critic_learner_refuses_rates_outside_their_ranges(bad: dict) -> None:
    with pytest.raises(
        ValueError, match="^need gamma in \\(0, 1\\], lambda_ in \\[0, 1\\] and tau in \\(0, 1\\]$"
    ):
        CriticLearner(Critic(2, hidden=8), **bad)


@pytest.mark.parametrize("bad", [{"lr": 0.0}, {"lr": -1e-3}, {"grad_clip": 0.0}])
def test_the_critic_learner_refuses_non_positive_lr_and_grad_clip(bad: dict) -> None:
    with pytest.raises(ValueError, match="^lr and grad_clip must be positive$"):
        CriticLearner(Critic(2, hidden=8), **bad)


def test_the_critic_learner_accepts_the_ends_of_its_ranges() -> None:
    torch.manual_seed(0)
    learner = CriticLearner(
        Critic(2, hidden=8), gamma=1.0, lambda_=1.0, tau=1.0, lr=1e-2, grad_clip=0.5
    )
    g = torch.Generator().manual_seed(0)
    states, costs = torch.randn(4, 8, 2, generator=g), torch.rand(3, 8, generator=g)
    metrics = learner.update_imagined(states, costs, torch.ones(3, 8))
    assert metrics["grad_norm"] > 0.5  # clipped to 0.5 for the step, reported before clipping
    # tau = 1: the target is the online net after each update.
    for target, online in zip(
        learner.target.parameters(), learner.critic.parameters(), strict=True
    ):
        assert torch.equal(target, online)


def test_the_first_adam_step_moves_each_weight_by_the_learning_rate() -> None:
    """Adam's first step is -lr * g / (|g| + eps): |change| = lr wherever |g| >> eps."""
    torch.manual_seed(0)
    critic = Critic(2, hidden=8)
    learner = CriticLearner(critic, gamma=0.9, lr=0.05)
    before = [p.clone() for p in critic.parameters()]
    g = torch.Generator().manual_seed(0)
    learner.update_imagined(
        torch.randn(4, 16, 2, generator=g), torch.rand(3, 16, generator=g) + 1.0, torch.ones(3, 16)
    )
    head_bias = critic.net[-1].bias
    torch.testing.assert_close((head_bias - before[-1]).abs(), torch.full((1,), 0.05))
    moved = torch.cat(
        [(p - b).abs().flatten() for p, b in zip(critic.parameters(), before, strict=True)]
    )
    assert moved.max().item() == pytest.approx(0.05, rel=1e-3)


def test_the_loss_of_a_single_transition_is_its_squared_error() -> None:
    """One sample, one step: the alive-weighted mean has weight 1, the loss is that error^2."""
    torch.manual_seed(0)
    learner = CriticLearner(Critic(2, hidden=8), gamma=0.5, lambda_=0.0)
    states, costs = (
        torch.randn(2, 1, 2, generator=torch.Generator().manual_seed(0)),
        torch.ones(1, 1),
    )
    metrics = learner.update_imagined(states, costs, torch.ones(1, 1))
    # V = 0 everywhere at first: the target is the cost, 1, and the prediction 0.
    assert metrics["target"] == 1.0 and metrics["value"] == 0.0
    assert metrics["loss"] == pytest.approx(1.0)


def test_update_imagined_reads_continues_in_the_costs_dtype() -> None:
    """A bool or float64 mask gives float32 costs exactly the update a float32 mask gives."""
    g = torch.Generator().manual_seed(0)
    states, costs = torch.randn(5, 8, 2, generator=g), torch.rand(4, 8, generator=g)
    alive = torch.ones(4, 8, dtype=torch.bool)
    alive[1, :3] = False
    results = []
    for continues in (alive.float(), alive, alive.double()):
        torch.manual_seed(0)
        learner = CriticLearner(Critic(2, hidden=8), gamma=0.9, lambda_=0.5)
        results.append(learner.update_imagined(states, costs, continues))
    assert results[0] == results[1] == results[2]
