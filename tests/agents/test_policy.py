"""Policy learning through a frozen model: epistemic uncertainty on and off the data, the
uncertainty penalty, the discounted LQR optimum on a known linear model, termination masking,
frozen model weights, and the fast agent / planner proposal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from agents.policy import Policy, PolicyAgent, PolicyLearner, PolicyProposal
from worldmodel.cost.trajectory import TrajectoryCost
from worldmodel.cost.uncertainty import UncertaintyPenalty
from worldmodel.data.store import EpisodeStore, Stats
from worldmodel.forward.fit import ModelTrainer
from worldmodel.forward.model import ForwardModel

# Data system: a damped 2-D linear system started inside [-1, 1]^2, driven by small actions
# (|a| <= A_MAX), so that both large states and large actions lie off the data.
A_DATA = np.array([[0.9, 0.1], [0.0, 0.9]], np.float32)
B_DATA = np.array([[0.0], [0.1]], np.float32)
A_MAX = 0.3
HORIZON = 5


@pytest.fixture(scope="module")
def data_and_model() -> tuple[EpisodeStore, ForwardModel]:
    """A small MC-dropout model fitted on the data system's random rollouts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    store = EpisodeStore(2, 1)
    for _ in range(100):
        x, obs, act, nxt = rng.uniform(-1, 1, 2).astype(np.float32), [], [], []
        for _ in range(10):
            a = rng.uniform(-A_MAX, A_MAX, 1).astype(np.float32)
            obs.append(x), act.append(a)
            x = A_DATA @ x + B_DATA @ a
            nxt.append(x)
        no = np.zeros(10, bool)
        store.add_episode(np.array(obs), np.array(act), np.zeros(10), np.array(nxt), no, no)
    model = ForwardModel(2, 1, latent_dim=0, hidden=64, layers=2, dropout=0.1)
    model.set_normalization(store.stats())
    trainer = ModelTrainer(model, lr=3e-3, seed=0)
    for _ in range(300):
        trainer.update(store.sample(64, 3, trainer.rng))
    torch.set_num_threads(before)
    return store, model.eval()


def states_at_radius(radius: float, n: int, g: torch.Generator) -> Tensor:
    direction = torch.randn(n, 2, generator=g)
    return direction / direction.norm(dim=-1, keepdim=True) * radius


def test_uncertainty_is_higher_off_the_data_than_on_it(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    _, model = data_and_model
    g = torch.Generator().manual_seed(1)
    actions = (torch.rand(HORIZON, 256, 1, generator=g) * 2 - 1) * A_MAX
    inside = torch.rand(256, 2, generator=g) * 1.6 - 0.8
    outside = states_at_radius(4.0, 256, g)  # ~7 data standard deviations from the centre
    u_in = model.uncertainty(inside, actions, n=8).mean().item()
    u_out = model.uncertainty(outside, actions, n=8).mean().item()
    assert u_out > 2.0 * u_in, f"uncertainty inside {u_in:.2e}, outside {u_out:.2e}"


def test_uncertainty_penalty_is_near_zero_on_the_data_and_large_off_it(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    store, model = data_and_model
    g = torch.Generator().manual_seed(2)
    penalty = UncertaintyPenalty(model, masks=8, threshold=1.0)
    with pytest.raises(RuntimeError, match="calibrate"):
        penalty(torch.zeros(HORIZON, 1))
    stats = penalty.calibrate(store.windows(store.window_starts(HORIZON), HORIZON), g)
    assert penalty.horizon == HORIZON and stats["std"] > 0

    actions = (torch.rand(HORIZON, 256, 1, generator=g) * 2 - 1) * A_MAX
    inside = torch.rand(256, 2, generator=g) * 1.6 - 0.8
    p_in = penalty(penalty.raw(inside, actions)).mean().item()
    p_out = penalty(penalty.raw(states_at_radius(4.0, 256, g), actions)).mean().item()
    assert p_in < 0.3 and p_out > 1.0, f"penalty inside {p_in:.3f}, outside {p_out:.3f}"
    with pytest.raises(ValueError, match="calibrated on"):
        penalty(torch.zeros(HORIZON + 1, 1))


def test_uncertainty_penalty_keeps_the_policy_near_the_data(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    """A cost rewarding large x[1] asks for a = 1, far beyond the data's |a| <= 0.3; the penalty
    keeps the policy near the edge of what the model has seen."""
    store, model = data_and_model
    g = torch.Generator().manual_seed(3)
    penalty = UncertaintyPenalty(model, masks=4, threshold=0.5)
    penalty.calibrate(store.windows(store.window_starts(HORIZON), HORIZON), g)
    start = torch.from_numpy(store.data["obs"])

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return -next_obs[..., 1]

    metrics = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        policy = Policy(2, 1, hidden=32)
        policy.set_normalization(store.stats())
        objective = TrajectoryCost(cost, gamma=0.99, penalty=penalty, penalty_weight=weight)
        learner = PolicyLearner(policy, model, objective, horizon=HORIZON, lr=3e-3, seed=0)
        for _ in range(60):
            metrics[weight] = learner.update(start[torch.randint(len(start), (128,), generator=g)])
    assert metrics[0.0]["action_abs"] > 0.9, metrics
    assert metrics[1.0]["action_abs"] < 0.5, metrics
    assert metrics[1.0]["uncertainty_penalty"] < 0.5 * metrics[0.0]["uncertainty_penalty"]


class LinearModel(nn.Module):
    """Known dynamics x' = A x + B u, no latent: the 'world model' of the LQR test."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)

    def step(
        self, s: Tensor, a: Tensor, z: Tensor | None = None, generator: object = None
    ) -> Tensor:
        return s @ self.a.T + a @ self.b.T

    def sample_prior(self, *shape: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.zeros(*shape, 0)


def test_policy_learner_approaches_the_discounted_lqr_cost() -> None:
    """With the exact cost-to-go x'Px as terminal value the best stationary policy of the
    H-step objective is the LQR feedback u = -Kx, so its cost is the target."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[1.0, 0.1], [0.0, 1.0]])
    b = torch.tensor([[0.005], [0.1]])
    q, r, gamma = torch.eye(2), 0.1, 0.95
    p = q.clone()
    for _ in range(2000):  # discounted Riccati iteration
        gain = gamma * (b.T @ p @ a) / (r + gamma * b.T @ p @ b)
        p = q + gamma * a.T @ p @ a - gamma * a.T @ p @ b @ gain
    model = LinearModel(a, b)

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return ((obs @ q) * obs).sum(-1) + r * action.square().sum(-1)

    def value(states: Tensor) -> Tensor:
        return ((states @ p) * states).sum(-1)

    policy = Policy(2, 1, hidden=32)
    policy.set_normalization(
        Stats(torch.zeros(2), torch.full((2,), 0.2), torch.zeros(2), torch.ones(2))
    )
    objective = TrajectoryCost(cost, value=value, gamma=gamma)
    learner = PolicyLearner(policy, model, objective, horizon=5, lr=3e-3)
    test_states = torch.rand(512, 2, generator=g) * 0.6 - 0.3

    def objective(act: object) -> float:
        s, total = test_states, torch.zeros(len(test_states))
        for t in range(5):
            u = act(s)
            total = total + gamma**t * cost(s, u, s)
            s = model.step(s, u)
        return (total + gamma**5 * value(s)).mean().item()

    with torch.no_grad():
        initial = objective(policy)
        lqr = objective(lambda s: (-s @ gain.T).clamp(-1, 1))
    for _ in range(300):
        learner.update(torch.rand(256, 2, generator=g) * 0.6 - 0.3)
    with torch.no_grad():
        learned = objective(policy)
        huge = policy(torch.randn(100, 2, generator=g) * 1e4)
    assert learned < 1.02 * lqr, (initial, learned, lqr)
    assert initial - learned > 0.9 * (initial - lqr), (initial, learned, lqr)
    assert huge.abs().max() <= 1.0


def test_terminated_states_stop_accumulating_cost_and_terminal_value() -> None:
    model = LinearModel(torch.eye(2), torch.zeros(2, 1))
    gamma = 0.9

    def unit_cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return 1.0 + 0.0 * action.sum(-1)  # depends on the policy only formally

    def ten(states: Tensor) -> Tensor:
        return torch.full(states.shape[:-1], 10.0)

    def run(terminated: object) -> dict[str, float]:
        objective = TrajectoryCost(unit_cost, terminated, ten, gamma=gamma)  # type: ignore[arg-type]
        learner = PolicyLearner(Policy(2, 1), model, objective, horizon=4)
        return learner.update(torch.randn(8, 2))

    ended = run(lambda s: torch.ones(s.shape[:-1], dtype=torch.bool))
    assert ended["imagined_cost"] == pytest.approx(1.0)  # the terminating step itself is paid
    assert ended["terminal_value"] == pytest.approx(0.0)
    alive = run(None)
    assert alive["imagined_cost"] == pytest.approx(sum(gamma**t for t in range(4)))
    assert alive["terminal_value"] == pytest.approx(10 * gamma**4)


def test_update_moves_only_the_policy_and_skips_non_finite_losses(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    store, model = data_and_model
    model.train()  # the trainer's mode must survive a policy update
    model.zero_grad(set_to_none=True)
    penalty = UncertaintyPenalty(model, masks=4)
    penalty.calibrate(store.windows(store.window_starts(HORIZON), HORIZON))
    model_before = [x.clone() for x in model.parameters()]

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return next_obs.square().sum(-1)

    policy = Policy(2, 1, hidden=16)
    objective = TrajectoryCost(
        cost, lambda s: s[..., 0] > 0.9, gamma=0.99, penalty=penalty, penalty_weight=0.5
    )
    learner = PolicyLearner(policy, model, objective, horizon=HORIZON, lr=1e-2)
    policy_before = [x.clone() for x in policy.parameters()]
    metrics = learner.update(torch.from_numpy(store.data["obs"][:64]))
    assert all(np.isfinite(v) for v in metrics.values())
    assert {"loss", "imagined_cost", "imagined_return", "uncertainty"} <= metrics.keys()
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert all(x.grad is None for x in model.parameters())
    assert all(torch.equal(x, y) for x, y in zip(model_before, model.parameters(), strict=True))
    assert any(
        not torch.equal(x, y) for x, y in zip(policy_before, policy.parameters(), strict=True)
    )
    assert learner.last_rollout is not None
    assert learner.last_rollout[0].states.shape == (HORIZON + 1, 64, 2)

    objective.cost = lambda o, a, n: torch.full(o.shape[:-1], float("nan"))
    policy_before = [x.clone() for x in policy.parameters()]
    assert learner.update(torch.zeros(4, 2)) == {"skipped_updates": 1.0}
    assert all(torch.equal(x, y) for x, y in zip(policy_before, policy.parameters(), strict=True))


def test_agent_and_proposal_follow_the_policy_within_bounds(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    _, model = data_and_model
    torch.manual_seed(0)
    policy = Policy(2, 1, hidden=16)
    with torch.no_grad():
        policy.net[-1].weight.mul_(100.0)  # saturate: outputs must still stay in the box
    obs = np.array([0.3, -0.2], np.float32)
    action = PolicyAgent(policy).act(obs)
    assert action.dtype == np.float32 and action.shape == (1,)
    assert np.abs(action).max() <= 1.0
    with torch.no_grad():
        np.testing.assert_allclose(action, policy(torch.from_numpy(obs)).numpy())
    noisy = [PolicyAgent(policy, noise=0.5, seed=3).act(obs) for _ in range(2)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert np.abs(noisy[0]).max() <= 1.0

    plan = PolicyProposal(policy, model, latent="zero")(torch.from_numpy(obs), 6)
    assert plan.shape == (6, 1) and plan.abs().max() <= 1.0
    with torch.no_grad():
        s = torch.from_numpy(obs)[None]
        for t in range(6):
            torch.testing.assert_close(plan[t], policy(s)[0])
            s = model.step(s, plan[t][None], torch.zeros(1, 0))


class Switchable(Policy):
    """A policy whose output can be made NaN, to exercise the agent's fallback."""

    broken = False

    def forward(self, states: Tensor) -> Tensor:
        out = super().forward(states)
        return out * float("nan") if self.broken else out


def test_policy_agent_adds_seeded_noise_clips_and_records_its_decision() -> None:
    torch.manual_seed(0)
    policy = Policy(2, 3, hidden=8)
    obs = np.array([0.2, -0.4], np.float32)
    with torch.no_grad():
        clean = policy(torch.from_numpy(obs)).numpy()
    agent = PolicyAgent(policy, noise=0.3, seed=5)
    draws = np.random.default_rng(5).standard_normal((4, 3))
    for draw in draws:
        action = agent.act(obs)
        np.testing.assert_allclose(action, np.clip(clean + 0.3 * draw, -1, 1), rtol=1e-6)
        assert agent.last is not None and np.array_equal(agent.last.action, action)
        assert np.isnan(agent.last.planned_cost) and np.isnan(agent.last.planned_step_cost)
        assert 0 < agent.last.seconds < 1 and not agent.last.fallback
    quiet = PolicyAgent(policy, seed=5)
    np.testing.assert_allclose(quiet.act(obs), clean, rtol=1e-6)
    assert quiet.rng.bit_generator.state == np.random.default_rng(5).bit_generator.state
    loud = PolicyAgent(policy, noise=100.0, seed=0)
    actions = np.stack([loud.act(obs) for _ in range(20)])
    assert actions.min() == -1.0 and actions.max() == 1.0  # both ends of the box, no further
    assert PolicyAgent.horizon == 1 and set(loud.generators()) == {"noise"}
    with pytest.raises(ValueError, match="^noise must be >= 0, got -0.1$"):
        PolicyAgent(policy, noise=-0.1)


def test_policy_agent_falls_back_to_its_previous_action_then_zero() -> None:
    torch.manual_seed(0)
    policy = Switchable(2, 1, hidden=8)
    obs = np.array([0.2, -0.4], np.float32)
    agent = PolicyAgent(policy)
    policy.broken = True
    zero = agent.act(obs)
    assert zero.dtype == np.float32  # the documented action dtype, fallback or not
    np.testing.assert_array_equal(zero, np.zeros(1, np.float32))
    assert agent.last.fallback and agent.fallbacks == 1
    policy.broken = False
    good = agent.act(obs)
    assert not agent.last.fallback and np.abs(good).max() > 0
    policy.broken = True
    np.testing.assert_array_equal(agent.act(obs), good)
    assert agent.fallbacks == 2
    agent.reset()
    assert agent.last is None
    np.testing.assert_array_equal(agent.act(obs), np.zeros(1, np.float32))  # forgot `good`


def test_prior_proposals_are_seeded_draws_and_zero_ones_the_mean_future() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=3, hidden=16, layers=1, dropout=0.0).eval()
    with torch.no_grad():
        model.decoder[0].weight.mul_(20.0)  # z matters to the prediction
    policy = Policy(2, 1, hidden=8)
    with torch.no_grad():
        policy.net[-1].weight.mul_(50.0)  # and the state to the action
    state = torch.tensor([0.3, -0.2])
    zero = PolicyProposal(policy, model, latent="zero")(state, 5)
    first = PolicyProposal(policy, model, latent="prior", seed=1)(state, 5)
    again = PolicyProposal(policy, model, latent="prior", seed=1)(state, 5)
    other = PolicyProposal(policy, model, latent="prior", seed=2)(state, 5)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other) and not torch.allclose(first, zero)
    torch.testing.assert_close(zero[0], first[0])  # the first action is the policy's at s0
    # By default the proposal is the mean future, as `wm run --agent mpc+policy` uses it.
    torch.testing.assert_close(PolicyProposal(policy, model)(state, 5), zero)
    with pytest.raises(ValueError, match="latent"):
        PolicyProposal(policy, model, latent="mean")


@pytest.mark.parametrize("bad", [{"horizon": 0}, {"lr": 0.0}, {"grad_clip": 0.0}])
def test_the_policy_learner_refuses_non_positive_settings(bad: dict) -> None:
    model = LinearModel(torch.eye(2), torch.ones(2, 1))
    with pytest.raises(ValueError):
        PolicyLearner(Policy(2, 1), model, TrajectoryCost(lambda s, a, s2: a.sum(-1)), **bad)


@pytest.mark.parametrize("dims", [(0, 1, 8, 1), (2, 0, 8, 1), (2, 1, 0, 1), (2, 1, 8, 0)])
def test_a_policy_needs_positive_sizes(dims: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        Policy(*dims)


def test_updates_are_counted_and_seeded_learners_imagine_alike() -> None:
    torch.manual_seed(0)
    model = ForwardModel(2, 1, latent_dim=2, hidden=8, layers=1, dropout=0.0)
    cost = TrajectoryCost(lambda s, a, s2: s2.square().sum(-1))
    learners = []
    for _ in range(2):
        torch.manual_seed(1)
        learners.append(PolicyLearner(Policy(2, 1), model, cost, horizon=3, seed=7))
    starts = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(learners[0].imagine(starts).z, learners[1].imagine(starts).z)
    for _ in range(3):
        metrics = learners[0].update(starts)
    assert learners[0].total_steps == 3 and learners[0].skipped_updates == 0
    assert metrics["grad_norm"] > 0 and {"loss", "imagined_cost", "action_abs"} <= set(metrics)
    cost.cost = lambda s, a, s2: s2.sum(-1) * float("nan")
    learners[0].update(starts)
    learners[0].update(starts)
    assert learners[0].skipped_updates == 2 and learners[0].total_steps == 3


def test_component_defaults_agree_with_the_configurator() -> None:
    """The Python API and `wm run` build the same policy by default (built, not read off the
    signature: a default is what a call without the argument gets)."""
    from agents.configurator.config import Config, PolicyConfig

    pc, config = PolicyConfig(), Config()
    policy = Policy(2, 1)
    widths = [m.out_features for m in policy.net if isinstance(m, nn.Linear)]
    assert widths == [pc.hidden] * pc.layers + [1]
    model = LinearModel(torch.eye(2), torch.ones(2, 1))
    learner = PolicyLearner(policy, model, TrajectoryCost(lambda s, a, s2: a.sum(-1)))
    assert learner.horizon == pc.horizon
    assert learner.generator.initial_seed() == config.seed
    assert PolicyAgent(policy).seed == config.seed
    assert PolicyProposal(policy, model).generator.initial_seed() == config.seed


def test_the_policy_normalises_raw_states() -> None:
    """A policy normalised by (mean m, std s), at m + s x, is the unnormalised one at x."""
    torch.manual_seed(0)
    plain = Policy(3, 2, hidden=16)
    with torch.no_grad():
        plain.net[-1].weight.normal_()  # the action depends clearly on the state
    normalised = Policy(3, 2, hidden=16)
    normalised.load_state_dict(plain.state_dict())
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 3.0, 2.0])
    normalised.set_normalization(Stats(mean, std, torch.zeros(3), torch.ones(3)))
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(normalised(mean + std * x), plain(x))


def test_nothing_is_recorded_before_the_first_decision_or_update() -> None:
    torch.manual_seed(0)
    policy = Policy(2, 1, hidden=8)
    assert PolicyAgent(policy).last is None
    model = LinearModel(torch.eye(2), torch.ones(2, 1))
    learner = PolicyLearner(policy, model, TrajectoryCost(lambda s, a, s2: s2.square().sum(-1)))
    assert learner.last_rollout is None and learner.total_steps == learner.skipped_updates == 0


def test_a_one_step_horizon_and_a_small_grad_clip_are_accepted() -> None:
    torch.manual_seed(0)
    model = LinearModel(torch.eye(2), torch.ones(2, 1))
    cost = TrajectoryCost(lambda s, a, s2: 100.0 * s2.square().sum(-1))
    learner = PolicyLearner(Policy(2, 1, hidden=8), model, cost, horizon=1, grad_clip=0.5)
    starts = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    assert learner.imagine(starts).actions.shape[0] == 1
    metrics = learner.update(starts)
    assert metrics["grad_norm"] > 0.5  # reported before clipping to 0.5
    with pytest.raises(
        ValueError, match="^horizon, lr, grad_clip and latent_samples must be positive$"
    ):
        PolicyLearner(Policy(2, 1), model, cost, horizon=0)


def test_the_kept_rollout_holds_its_detached_terms() -> None:
    torch.manual_seed(0)
    model = LinearModel(torch.tensor([[1.0, 0.1], [0.0, 1.0]]), torch.tensor([[0.0], [0.1]]))

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return next_obs.square().sum(-1) + action.square().sum(-1)

    learner = PolicyLearner(
        Policy(2, 1, hidden=8), model, TrajectoryCost(cost, gamma=0.9), horizon=3
    )
    learner.update(torch.randn(6, 2, generator=torch.Generator().manual_seed(0)))
    assert learner.last_rollout is not None
    trajectory, terms = learner.last_rollout
    expected = cost(trajectory.states[:-1], trajectory.actions, trajectory.states[1:])
    torch.testing.assert_close(terms.costs, expected)
    torch.testing.assert_close(terms.weights[:, 0], torch.tensor([1.0, 0.9, 0.81]))
    assert terms.value is None and terms.uncertainty is None
    assert not any(t.requires_grad for t in (terms.total, terms.costs, terms.weights, terms.alive))


def test_the_imagined_return_is_minus_the_undiscounted_cost_of_the_alive_steps() -> None:
    model = LinearModel(torch.eye(2), torch.zeros(2, 1))

    def two(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return 2.0 + 0.0 * action.sum(-1)

    def run(terminated: object) -> dict[str, float]:
        objective = TrajectoryCost(two, terminated, gamma=0.9)  # type: ignore[arg-type]
        learner = PolicyLearner(Policy(2, 1), model, objective, horizon=4)
        return learner.update(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)))

    assert run(None)["imagined_return"] == pytest.approx(-8.0)  # 4 steps of 2, per trajectory
    ended = run(lambda s: torch.ones(s.shape[:-1], dtype=torch.bool))
    assert ended["imagined_return"] == pytest.approx(-2.0)  # the terminating step only


def test_uncertainty_metrics_are_means_over_the_alive_steps(
    data_and_model: tuple[EpisodeStore, ForwardModel],
) -> None:
    store, model = data_and_model
    penalty = UncertaintyPenalty(model, masks=4, threshold=0.0)
    penalty.calibrate(
        store.windows(store.window_starts(HORIZON), HORIZON), torch.Generator().manual_seed(0)
    )

    def cost(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return next_obs.square().sum(-1)

    def run(terminated: object, starts: Tensor) -> tuple[dict[str, float], object]:
        torch.manual_seed(0)
        objective = TrajectoryCost(
            cost,
            terminated,  # type: ignore[arg-type]
            gamma=0.99,
            penalty=penalty,
            penalty_weight=0.5,
        )
        learner = PolicyLearner(Policy(2, 1, hidden=16), model, objective, horizon=HORIZON)
        metrics = learner.update(starts)
        assert learner.last_rollout is not None
        return metrics, learner.last_rollout[1]

    starts = torch.from_numpy(store.data["obs"][:64]) * 1.5
    metrics, terms = run(lambda s: s[..., 0] > 0.9, starts)
    reached = terms.alive[:HORIZON] > 0
    assert 0 < (~reached).sum() < reached.numel() // 2  # some steps come after a termination
    assert metrics["uncertainty"] == pytest.approx(terms.uncertainty[reached].mean().item())
    assert metrics["uncertainty_penalty"] == pytest.approx(terms.penalty[reached].mean().item())
    # One trajectory that ends on its first step: the mean is over that single step.
    metrics, terms = run(lambda s: torch.ones(s.shape[:-1], dtype=torch.bool), starts[:1])
    assert metrics["uncertainty"] == pytest.approx(terms.uncertainty[0, 0].item())
    assert metrics["uncertainty_penalty"] == pytest.approx(terms.penalty[0, 0].item())


def test_fallbacks_are_logged_on_the_1st_2nd_4th_and_8th_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    policy = Switchable(2, 1, hidden=8)
    obs = np.array([0.2, -0.4], np.float32)
    agent = PolicyAgent(policy)
    policy.broken = True
    with caplog.at_level("WARNING", logger="agents.policy"):
        agent.act(obs)  # no previous action yet: zero
        policy.broken = False
        agent.act(obs)
        policy.broken = True
        for _ in range(8):
            agent.act(obs)
    assert agent.fallbacks == 9
    assert [r.getMessage() for r in caplog.records] == [
        "policy: non-finite action; used the zero action instead (1 fallbacks so far)",
        "policy: non-finite action; used the previous action instead (2 fallbacks so far)",
        "policy: non-finite action; used the previous action instead (4 fallbacks so far)",
        "policy: non-finite action; used the previous action instead (8 fallbacks so far)",
    ]
