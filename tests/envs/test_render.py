import warnings

import numpy as np
import pytest

import envs.render
from envs import make_task
from envs.render import MujocoStateRenderer, PendulumStateRenderer, make_renderer

MUJOCO_TASKS = ["InvertedPendulum-v5", "Reacher-v5", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"]


def episode_states(env_id: str, steps: int = 10) -> np.ndarray:
    env = make_task(env_id).make_env(seed=0)
    states = [env.reset(seed=0)[0]]
    for _ in range(steps):
        states.append(env.step(env.action_space.sample())[0])
    env.close()
    return np.stack(states)


@pytest.mark.parametrize("env_id", MUJOCO_TASKS)
def test_observation_maps_back_to_the_simulator_state_it_came_from(env_id: str) -> None:
    """qpos/qvel recovered from an observation reproduce that observation in the real env."""
    renderer = make_renderer(make_task(env_id))
    if renderer is None:
        pytest.skip("no offscreen OpenGL here")
    assert isinstance(renderer, MujocoStateRenderer)
    env = make_task(env_id).make_env(seed=1)
    env.reset(seed=1)
    for _ in range(5):
        obs = env.step(env.action_space.sample())[0]
    qpos, qvel = renderer._to_qpos_qvel(obs.astype(np.float64))
    env.unwrapped.set_state(qpos, qvel)
    np.testing.assert_allclose(env.unwrapped._get_obs(), obs, atol=1e-5)
    renderer.close()
    env.close()


@pytest.mark.parametrize("env_id", ["Pendulum-v1", *MUJOCO_TASKS])
def test_frames_have_the_asked_shape_and_follow_the_state(env_id: str) -> None:
    renderer = make_renderer(make_task(env_id), width=48, height=32)
    if renderer is None:
        pytest.skip("no offscreen OpenGL here")
    states = episode_states(env_id)
    frames = renderer.render(states)
    assert frames.shape == (len(states), 32, 48, 3) and frames.dtype == np.uint8
    assert frames.std() > 0  # not a blank image
    assert not np.array_equal(frames[0], frames[-1])  # the body moved
    np.testing.assert_array_equal(renderer.render(states[:1]), frames[:1])  # no hidden state
    renderer.close()
    renderer.close()  # closing twice is harmless


def test_pendulum_is_drawn_upright_at_angle_zero() -> None:
    frame = PendulumStateRenderer(64, 64).render(np.array([[1.0, 0.0, 0.0]]))[0]
    red = (frame[..., 0] > 150) & (frame[..., 1] < 120)
    rows = np.flatnonzero(red.any(axis=1))
    assert rows.max() <= 34 and rows.min() < 16  # the rod lies above the pivot


def test_no_opengl_means_a_warning_and_no_renderer(monkeypatch) -> None:
    def broken(width: int, height: int) -> None:
        raise ImportError("no EGL")

    monkeypatch.setattr(envs.render, "_gl_context", broken)
    with pytest.warns(RuntimeWarning, match="skipping video"):
        assert make_renderer(make_task("Hopper-v5")) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_renderer(make_task("Pendulum-v1")) is not None  # drawn without OpenGL


def test_the_ledge_cart_is_drawn_where_its_position_says() -> None:
    from envs.render import LedgeStateRenderer

    frames = LedgeStateRenderer(64, 64).render(np.array([[-1.0, 0.0], [0.0, 0.3], [0.95, 0.0]]))
    dark = [np.nonzero(frame.mean(-1).min(0) < 80)[0].mean() for frame in frames]
    # positions -1.5 .. 1.5 span the 64 columns
    np.testing.assert_allclose(dark, [(x + 1.5) / 3 * 64 for x in (-1.0, 0.0, 0.95)], atol=1.5)
