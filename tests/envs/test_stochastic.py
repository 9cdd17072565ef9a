"""The stochastic tasks: their outcomes are exact, both happen, and costs are minus rewards."""

import numpy as np
import pytest
import torch

from envs import TASKS, make_task
from envs.stochastic import (
    LEDGE_EDGE,
    LEDGE_GOAL,
    PUSH,
    GustyLedgeEnv,
    gusty_ledge_cost,
    gusty_ledge_outcomes,
    pushed_pendulum_outcomes,
)

STOCHASTIC = ["GustyLedge-v0", "PushedInvertedPendulum-v0"]


def _transitions(env_id: str, steps: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    task = make_task(env_id)
    env = task.make_env(seed=seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        out.append((obs, action, next_obs, np.float64(reward), np.bool_(terminated)))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return out


@pytest.mark.parametrize("env_id", STOCHASTIC)
def test_the_real_next_state_is_one_of_two_distinct_outcomes_and_both_happen(env_id: str) -> None:
    task = TASKS[env_id]()  # built here, not cached: this test checks the factory's fields
    assert task.outcomes is not None and task.random_dims
    obs, action, next_obs, _, _ = (
        np.stack(x) for x in zip(*_transitions(env_id, 300), strict=True)
    )
    outcomes = task.outcomes(obs, action)  # [2, N, S]
    distance = np.linalg.norm(outcomes - next_obs[None], axis=-1)  # [2, N]
    assert distance.min(0).max() < 1e-6
    which = distance.argmin(0)
    assert 0.4 < which.mean() < 0.6  # a fair coin over 300 steps
    gap = np.abs(outcomes[1] - outcomes[0])  # the randomness moves the dims it names
    assert (gap[:, list(task.random_dims)].max(-1) > 1e-3).all()
    # ... and, relative to each dim's spread over the data, only them (the ledge: 0.26 and 0;
    # the pendulum's kick: 0.26 and 0.73 on cart position and velocity, <= 0.003 on the pole).
    moved = gap.mean(0) / obs.std(0)
    assert set(np.flatnonzero(moved > 0.01)) == set(task.random_dims)


@pytest.mark.parametrize("env_id", STOCHASTIC)
def test_cost_is_minus_the_reward_and_termination_the_env_flag(env_id: str) -> None:
    task = make_task(env_id)
    obs, action, next_obs, reward, terminated = (
        torch.as_tensor(np.stack(x)) for x in zip(*_transitions(env_id, 300, seed=1), strict=True)
    )
    torch.testing.assert_close(task.cost(obs, action.double(), next_obs), -reward)
    if task.terminated is None:
        assert not terminated.any()
    else:
        assert terminated.any()
        torch.testing.assert_close(task.terminated(next_obs), terminated)


def test_the_ledge_pays_for_distance_to_the_goal_and_per_metre_beyond_the_edge() -> None:
    at = lambda x: torch.tensor([[x, 0.0]])  # noqa: E731
    none = torch.zeros(1, 2)
    assert gusty_ledge_cost(none, none[:, :1], at(LEDGE_GOAL)).item() == 0.0
    assert gusty_ledge_cost(none, none[:, :1], at(LEDGE_GOAL - 0.1)).item() == pytest.approx(0.01)
    beyond = gusty_ledge_cost(none, none[:, :1], at(LEDGE_EDGE + 0.1)).item()
    assert beyond == pytest.approx((LEDGE_EDGE + 0.1 - LEDGE_GOAL) ** 2 + 1.0)


def test_the_pendulum_push_changes_the_cart_velocity_by_twice_the_push() -> None:
    obs = np.zeros((1, 4))
    outcomes = pushed_pendulum_outcomes(obs, np.zeros((1, 1)))
    # two frames of the cart's own dynamics damp the kick a little
    assert outcomes[1, 0, 2] - outcomes[0, 0, 2] == pytest.approx(2 * PUSH, rel=0.1)
    np.testing.assert_allclose(outcomes[0, 0, 2], -outcomes[1, 0, 2], atol=1e-3)


def test_the_ledge_env_renders_its_cart_where_it_stands() -> None:
    env = make_task("GustyLedge-v0").make_env(seed=0, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    columns = np.nonzero(frame.mean(-1).min(0) < 80)[0]  # the dark cart
    assert abs(columns.mean() - (obs[0] + 1.5) / 3 * 64) < 1.5
    edge = int((LEDGE_EDGE + 1.5) / 3 * 64) + 1
    assert tuple(frame[0, edge]) == (230, 180, 180) and tuple(frame[0, 0]) == (255, 255, 255)
    with pytest.raises(ValueError, match="^GustyLedge renders only 'rgb_array', not 'human'$"):
        GustyLedgeEnv(render_mode="human")
    assert GustyLedgeEnv().render() is None


def test_ledge_outcomes_are_the_hand_computed_next_states() -> None:
    """velocity' = v/2 + u/2 with u clipped to [-1, 1], position' = p + 0.2 velocity' -+ 0.1;
    in float64 whatever the inputs' dtype, for any leading dims."""
    obs = np.array([[0.2, 0.4], [-0.5, -1.0], [0.0, 0.6], [1.0, 0.0]], np.float32)
    action = np.array([[0.6], [3.0], [-3.0], [-0.2]], np.float32)
    velocity = np.array([0.5, 0.0, -0.2, -0.1])
    position = np.array([0.3, -0.5, -0.04, 0.98])
    outcomes = gusty_ledge_outcomes(obs, action)
    assert outcomes.shape == (2, 4, 2) and outcomes.dtype == np.float64
    expected = np.stack([np.stack([position + g, velocity], -1) for g in (-0.1, 0.1)])
    np.testing.assert_allclose(outcomes, expected, atol=1e-7)
    np.testing.assert_allclose(gusty_ledge_outcomes(obs[1], action[1]), expected[:, 1], atol=1e-7)


def test_the_ledge_cost_at_exact_positions() -> None:
    """(x - 0.95)^2 plus 10 per metre beyond the edge at 1.0: the constants, at known places."""
    positions = torch.tensor([0.95, 1.0, 1.2, 0.5, -1.0], dtype=torch.float64)
    next_obs = torch.stack([positions, torch.full_like(positions, 7.0)], -1)
    cost = gusty_ledge_cost(torch.zeros(5, 2), torch.zeros(5, 1), next_obs)
    expected = [0.0, 0.0025, 0.0625 + 2.0, 0.2025, 3.8025]
    torch.testing.assert_close(cost, torch.tensor(expected, dtype=torch.float64))
    assert (LEDGE_GOAL, LEDGE_EDGE) == (0.95, 1.0)


def test_the_ledge_episode_is_its_seeded_coin_flips() -> None:
    """reset(seed) starts at rest at uniform(-1, 0.5) of the env's generator, and each step
    takes outcome integers(2) of the same generator: the whole episode by hand. The reward is
    minus the cost of the new state; the env never terminates nor truncates itself."""
    env, rng = GustyLedgeEnv(), np.random.default_rng(7)
    obs, info = env.reset(seed=7)
    expected = np.array([rng.uniform(-1.0, 0.5), 0.0])
    np.testing.assert_array_equal(obs, expected)
    assert info == {} and obs.dtype == np.float64
    for action in np.linspace(-1.5, 1.5, 40, dtype=np.float32)[:, None]:
        coin = rng.integers(2)
        expected = gusty_ledge_outcomes(expected, action)[coin]
        next_obs, reward, terminated, truncated, info = env.step(action)
        np.testing.assert_allclose(next_obs, expected, rtol=0, atol=1e-12)
        cost = (expected[0] - 0.95) ** 2 + 10.0 * max(expected[0] - 1.0, 0.0)
        assert reward == pytest.approx(-cost, abs=1e-12)
        assert (terminated, truncated, info) == (False, False, {})


def test_ledge_starts_cover_minus_1_to_0_5_at_rest() -> None:
    """Starts of 200 seeds lie in [-1, 0.5], reach within 0.03 of both ends, with velocity 0."""
    env = GustyLedgeEnv()
    starts = np.stack([env.reset(seed=s)[0] for s in range(200)])
    assert (starts[:, 1] == 0.0).all()
    assert -1.0 <= starts[:, 0].min() < -0.97 and 0.47 < starts[:, 0].max() <= 0.5


def test_a_ledge_step_before_reset_starts_from_the_origin() -> None:
    """The env is at rest at 0 until reset: a first step with no action is a bare gust."""
    obs, *_ = GustyLedgeEnv().step(np.zeros(1, np.float32))
    assert abs(obs[0]) == pytest.approx(0.1) and obs[1] == 0.0 and obs.shape == (2,)


def test_the_ledge_spaces_and_render_mode() -> None:
    """Actions a float32 box [-1, 1]^1, observations an unbounded float64 box of 2; render
    mode None or 'rgb_array' kept as given; 5 frames per second."""
    env = GustyLedgeEnv(render_mode="rgb_array")
    assert env.render_mode == "rgb_array" and GustyLedgeEnv().render_mode is None
    act, obs = env.action_space, env.observation_space
    assert (act.shape, act.dtype, act.low.tolist(), act.high.tolist()) == (
        (1,), np.float32, [-1.0], [1.0],
    )  # fmt: skip
    assert (obs.shape, obs.dtype) == ((2,), np.float64)
    assert (obs.low == -np.inf).all() and (obs.high == np.inf).all()
    assert env.metadata["render_fps"] == 5 and env.metadata["render_modes"] == ["rgb_array"]


def test_register_adds_both_envs_once_with_their_time_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registering again from scratch gives both ids their entry points and time limits (100
    and 1,000 steps); a second call changes nothing."""
    import gymnasium as gym

    from envs import stochastic

    for env_id in STOCHASTIC:
        monkeypatch.delitem(gym.registry, env_id)
    stochastic.register()
    first = {env_id: gym.registry[env_id] for env_id in STOCHASTIC}
    stochastic.register()
    assert {env_id: gym.registry[env_id] for env_id in STOCHASTIC} == first
    ledge, pendulum = first["GustyLedge-v0"], first["PushedInvertedPendulum-v0"]
    assert (ledge.entry_point, ledge.max_episode_steps) == (GustyLedgeEnv, 100)
    assert pendulum.entry_point == "envs.pushed_pendulum:PushedInvertedPendulumEnv"
    assert pendulum.max_episode_steps == 1000


def test_a_push_is_a_change_of_cart_velocity() -> None:
    """The right push from cart velocity v is the left push from v + 2 PUSH (the kick adds to
    the velocity, it does not set it), for each of several states and actions in a batch."""
    rng = np.random.default_rng(0)
    obs = np.concatenate([rng.uniform(-0.1, 0.1, (3, 2)), rng.uniform(-1, 1, (3, 2))], 1)
    action = rng.uniform(-1, 1, (3, 1))
    faster = obs + np.array([0.0, 0.0, 2 * PUSH, 0.0])
    right = pushed_pendulum_outcomes(obs, action)[1]
    np.testing.assert_allclose(pushed_pendulum_outcomes(faster, action)[0], right, atol=1e-9)
    one = pushed_pendulum_outcomes(obs[2], action[2])  # one state, without a batch dim
    np.testing.assert_allclose(one[:, 0], pushed_pendulum_outcomes(obs, action)[:, 2], atol=1e-12)


def test_pendulum_outcomes_refuse_unequal_numbers_of_states_and_actions() -> None:
    """N states need N actions: a mismatch is an error, not a silently shorter answer."""
    with pytest.raises(ValueError):
        pushed_pendulum_outcomes(np.zeros((3, 4)), np.zeros((2, 1)))


def test_pendulum_outcomes_leave_the_simulated_env_as_it_was() -> None:
    """Computing outcomes in the middle of an episode changes nothing that follows: an env that
    does and one that does not take the same steps, to the last bit."""
    from envs.pushed_pendulum import PushedInvertedPendulumEnv

    a, b = PushedInvertedPendulumEnv(), PushedInvertedPendulumEnv()
    obs_a, obs_b = a.reset(seed=3)[0], b.reset(seed=3)[0]
    for t in range(10):
        action = np.array([0.3 * np.sin(t)])
        if t % 3 == 1:
            outcomes = a.outcomes(obs_a + 0.05, np.array([1.5]))
            assert outcomes.shape == (2, 4)
        obs_a, obs_b = a.step(action)[0], b.step(action)[0]
        np.testing.assert_array_equal(obs_a, obs_b)
    a.close(), b.close()
