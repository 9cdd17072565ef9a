import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from agents.configurator import build_model
from agents.configurator.config import ModelConfig
from envs import TASKS, Task, make_task
from envs.render import make_renderer
from worldmodel.forward.model import ForwardModel
from worldmodel.simulator import BatchedWorldModelEnv, WorldModelEnv

TINY = ModelConfig(hidden=16, layers=1)


def tiny_model(task: Task, seed: int = 0) -> ForwardModel:
    torch.manual_seed(seed)
    return build_model(TINY, task.obs_dim, task.act_dim).eval()


def real_starts(task: Task, n: int = 5) -> np.ndarray:
    env = task.make_env()
    starts = np.stack([env.reset(seed=i)[0] for i in range(n)]).astype(np.float32)
    env.close()
    return starts


def quiet(model: ForwardModel) -> ForwardModel:
    """Predictions ~ the current state: the model's deltas scaled to almost nothing."""
    model.delta_std.fill_(1e-6)
    return model


@pytest.mark.parametrize("env_id", list(TASKS))
def test_check_env_passes_for_every_task(env_id: str) -> None:
    task = make_task(env_id)
    renderer = make_renderer(task)
    env = WorldModelEnv(
        tiny_model(task),
        task.cost,
        real_starts(task),
        terminated=task.terminated,
        max_episode_steps=task.max_episode_steps,
        renderer=renderer,
        render_mode="rgb_array" if renderer is not None else None,
    )
    check_env(env)
    env.reset(seed=0)
    if renderer is not None:
        frame = env.render()
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    env.close()


def test_single_env_follows_copy_zero_of_the_batched_env_across_episodes() -> None:
    task = make_task("Pendulum-v1")
    model, starts = tiny_model(task), real_starts(task)
    single = WorldModelEnv(model, task.cost, starts, max_episode_steps=7)
    batched = BatchedWorldModelEnv(model, task.cost, starts, 1, max_episode_steps=7, seed=3)
    obs, _ = single.reset(seed=3)
    np.testing.assert_array_equal(obs, batched.state[0].numpy())
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 1)).astype(np.float32)
    ends = 0
    for action in actions:
        obs, reward, terminated, truncated, _ = single.step(action)
        result = batched.step(torch.from_numpy(action)[None])
        np.testing.assert_array_equal(obs, result.final_obs[0].numpy())
        assert reward == pytest.approx(result.reward[0].item(), rel=0, abs=0)
        assert (terminated, truncated) == (result.terminated[0].item(), result.truncated[0].item())
        if terminated or truncated:
            ends += 1
            obs, _ = single.reset()
            np.testing.assert_array_equal(obs, result.obs[0].numpy())
    assert ends == 2


def test_batched_rows_equal_one_row_at_a_time_with_the_same_latents() -> None:
    task = make_task("HalfCheetah-v5")
    model = tiny_model(task)
    env = BatchedWorldModelEnv(model, task.cost, real_starts(task), 6, seed=1)
    state, generator_state = env.state.clone(), env.generator.get_state()
    actions = torch.rand(6, task.act_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    result = env.step(actions)
    z = model.sample_prior(6, generator=torch.Generator().set_state(generator_state))
    for i in range(6):
        expected = model.step(state[i : i + 1], actions[i : i + 1], z[i : i + 1])[0]
        torch.testing.assert_close(result.final_obs[i], expected.detach())
        cost = task.cost(state[i], actions[i], expected.detach())
        torch.testing.assert_close(result.reward[i], -cost)


def test_same_seed_same_dream_and_another_seed_another() -> None:
    task = make_task("Reacher-v5")
    model, starts = tiny_model(task), real_starts(task)
    actions = torch.zeros(8, task.act_dim)

    def dream(seed: int) -> torch.Tensor:
        env = BatchedWorldModelEnv(model, task.cost, starts, 8, seed=seed)
        return torch.stack([env.step(actions).obs for _ in range(5)])

    assert torch.equal(dream(0), dream(0))
    assert not torch.equal(dream(0), dream(1))


def test_termination_comes_from_the_task_and_finished_copies_restart() -> None:
    task = make_task("InvertedPendulum-v5")
    upright, fallen = np.zeros(4, np.float32), np.array([0.0, 0.5, 0.0, 0.0], np.float32)
    env = BatchedWorldModelEnv(
        quiet(tiny_model(task)),
        task.cost,
        np.stack([fallen]),
        2,
        terminated=task.terminated,
        seed=0,
    )
    env.start_states = torch.from_numpy(np.stack([upright]))  # restarts upright from now on
    result = env.step(torch.zeros(2, 1))
    assert result.terminated.all() and not result.truncated.any()
    torch.testing.assert_close(
        result.final_obs, torch.from_numpy(np.stack([fallen] * 2)), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(result.obs, torch.zeros(2, 4))
    assert torch.equal(result.reward, torch.zeros(2))  # InvertedPendulum pays 1 unless it fell


def test_time_limit_truncates_every_copy_and_restarts_it() -> None:
    task = make_task("Pendulum-v1")
    starts = real_starts(task)
    env = BatchedWorldModelEnv(tiny_model(task), task.cost, starts, 3, max_episode_steps=4, seed=0)
    for _ in range(3):
        assert not env.step(torch.zeros(3, 1)).truncated.any()
    result = env.step(torch.zeros(3, 1))
    assert result.truncated.all() and not result.terminated.any()
    assert all((torch.from_numpy(starts) == row).all(-1).any() for row in result.obs)
    assert not env.step(torch.zeros(3, 1)).truncated.any()


def test_a_blown_up_prediction_ends_the_episode_without_nan() -> None:
    task = make_task("Pendulum-v1")
    model = tiny_model(task)
    model.delta_mean.fill_(float("inf"))
    env = BatchedWorldModelEnv(model, task.cost, real_starts(task), 4, seed=0)
    state = env.state.clone()
    result = env.step(torch.ones(4, 1))
    assert result.terminated.all()
    assert torch.equal(result.final_obs, state)
    assert torch.isfinite(result.reward).all() and torch.isfinite(result.obs).all()


def test_actions_outside_the_box_are_clipped() -> None:
    task = make_task("Pendulum-v1")
    model, starts = tiny_model(task), real_starts(task)
    outside = BatchedWorldModelEnv(model, task.cost, starts, 2, seed=0)
    inside = BatchedWorldModelEnv(model, task.cost, starts, 2, seed=0)
    far, edge = outside.step(torch.full((2, 1), 5.0)), inside.step(torch.ones(2, 1))
    assert torch.equal(far.final_obs, edge.final_obs)


def test_bad_arguments_are_rejected() -> None:
    task = make_task("Pendulum-v1")
    model = tiny_model(task)
    with pytest.raises(ValueError, match="start_states"):
        BatchedWorldModelEnv(model, task.cost, np.zeros((2, 5), np.float32), 1)
    with pytest.raises(ValueError, match="num_envs"):
        BatchedWorldModelEnv(model, task.cost, np.zeros((2, 3), np.float32), 0)
    with pytest.raises(ValueError, match="renderer"):
        WorldModelEnv(model, task.cost, np.zeros((2, 3), np.float32), render_mode="rgb_array")
