"""Render task states (real or imagined) into RGB frames, without stepping any simulator.

MuJoCo tasks write the positions/velocities a state holds into their own `MjData`, run the
kinematics and render offscreen; tasks without a MuJoCo body (Pendulum, GustyLedge) are drawn
with PIL. Both
take states [T, S] and return frames [T, H, W, 3] uint8, so imagined states from a world model
render exactly like real ones.

Headless OpenGL: MuJoCo picks its GL backend from `MUJOCO_GL` when `mujoco` is first imported, so
a backend chosen here would come too late whenever an env was made before. The renderer therefore
makes its own context (EGL on Linux unless `MUJOCO_GL` names another) and draws through the
low-level API. `use_headless_gl()`, which the command line calls first thing, defaults
`MUJOCO_GL` to egl on a Linux machine without a display, for gymnasium's own rendering. When no
context can be made, `make_renderer` warns once and returns None: video is skipped, nothing
crashes.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gymnasium as gym
import mujoco
import numpy as np
from PIL import Image, ImageDraw

from envs.stochastic import LEDGE_EDGE, LEDGE_GOAL
from envs.tasks import Task

_LINUX = sys.platform.startswith("linux")


def use_headless_gl() -> None:
    """Default `MUJOCO_GL` to egl on a Linux machine without a display, where libEGL exists.

    Call it before any env is made: MuJoCo reads the variable when it first makes a context for
    gymnasium's own rendering. A process-wide setting, so a call rather than an import's effect;
    never where libEGL is missing (MuJoCo would then fail outright).
    """
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if _LINUX and headless and ctypes.util.find_library("EGL"):
        os.environ.setdefault("MUJOCO_GL", "egl")


QposQvel = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""state [S] -> (qpos [nq], qvel [nv]) of the task's MuJoCo model."""


class StateRenderer(Protocol):
    """Draws states; `close` frees its graphics resources."""

    def render(self, states: np.ndarray) -> np.ndarray:
        """states [T, S] -> frames [T, H, W, 3] uint8."""
        ...

    def close(self) -> None: ...


def _positions_velocities(state: np.ndarray, nq: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """Observations laid out as [qpos, qvel] (InvertedPendulum; HalfCheetah, Hopper with x)."""
    return state[:nq], state[nq : nq + nv]


def _reacher(state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reacher-v5 obs [cos q0, cos q1, sin q0, sin q1, target xy, qdot0, qdot1, tip - target xy].

    The joint angles come back through atan2 (imagined cos/sin need not lie on the circle); the
    target joints are at rest, as the env keeps them.
    """
    angles = np.arctan2(state[2:4], state[0:2])
    qpos = np.concatenate([angles, state[4:6]])
    qvel = np.concatenate([state[6:8], np.zeros(2, state.dtype)])
    return qpos, qvel


_SPECIAL_LAYOUTS: Mapping[str, QposQvel] = {"Reacher-v5": _reacher}
# The env's default view of Reacher is from 2 m at 45 degrees: at 64x64 the arm is a few pixels.
_CAMERA_OVERRIDES: Mapping[str, Mapping[str, float]] = {
    "Reacher-v5": {"distance": 0.75, "elevation": -90.0}
}


def _gl_context(width: int, height: int) -> Any:
    """An offscreen OpenGL context of the backend `MUJOCO_GL` names (EGL by default on Linux)."""
    backend = os.environ.get("MUJOCO_GL", "egl" if _LINUX else "").lower()
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        from mujoco.gl_context import GLContext  # MuJoCo's own choice for this platform
    return GLContext(width, height)


class _NotDrawable(ValueError):
    """A task whose states this module cannot draw (nothing is wrong with the machine)."""


class MujocoStateRenderer:
    """Offscreen renderer of a MuJoCo task's states, on the task's own model.

    Shadows, multisampling and floor reflections are off: at 64x64 they cost ~15x the frame rate
    and change the picture little.
    Locomotion tasks use their model's `track` camera (it follows the body, so a running cheetah
    stays in frame); others use the env's default free camera.
    """

    def __init__(self, task: Task, width: int = 64, height: int = 64) -> None:
        env = gym.make(task.id, **task.gym_kwargs)
        unwrapped: Any = env.unwrapped
        if not isinstance(getattr(unwrapped, "model", None), mujoco.MjModel):
            env.close()
            raise _NotDrawable("its states are drawn only for gymnasium's MuJoCo envs")
        # The env is thrown away below, so its model is ours to change.
        self.model: mujoco.MjModel = unwrapped.model
        camera_config = unwrapped.mujoco_renderer.default_cam_config or {}
        env.close()
        model = self.model
        nq, nv = model.nq, model.nv
        if task.id in _SPECIAL_LAYOUTS:
            self._to_qpos_qvel = _SPECIAL_LAYOUTS[task.id]
        elif task.obs_dim == nq + nv:
            self._to_qpos_qvel = lambda s: _positions_velocities(s, nq, nv)
        else:
            raise _NotDrawable(
                f"its observations are not [qpos, qvel] ({task.obs_dim} numbers, not {nq + nv}); "
                "add a mapping in envs/render.py"
            )
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.mat_reflectance[:] = 0.0  # a mirror floor renders the scene twice
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.data = mujoco.MjData(model)
        self.width, self.height = width, height
        self.camera = mujoco.MjvCamera()
        track = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
        if track >= 0:
            self.camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
            self.camera.fixedcamid = track
        else:
            for key, value in {**camera_config, **_CAMERA_OVERRIDES.get(task.id, {})}.items():
                if isinstance(value, np.ndarray):
                    getattr(self.camera, key)[:] = value
                else:
                    setattr(self.camera, key, value)
        self.option = mujoco.MjvOption()
        self.scene = mujoco.MjvScene(model, maxgeom=1000)
        self.rect = mujoco.MjrRect(0, 0, width, height)
        self._gl = _gl_context(width, height)
        self._gl.make_current()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)

    def render(self, states: np.ndarray) -> np.ndarray:
        """states [T, S] -> frames [T, H, W, 3] uint8."""
        states = np.asarray(states, np.float64)
        frames = np.empty((len(states), self.height, self.width, 3), np.uint8)
        self._gl.make_current()  # another renderer may have made its context current since
        for t, state in enumerate(states):
            qpos, qvel = self._to_qpos_qvel(state)
            self.data.qpos[:], self.data.qvel[:] = qpos, qvel
            mujoco.mj_forward(self.model, self.data)
            mujoco.mjv_updateScene(
                self.model,
                self.data,
                self.option,
                None,
                self.camera,
                mujoco.mjtCatBit.mjCAT_ALL,
                self.scene,
            )
            mujoco.mjr_render(self.rect, self.scene, self._context)
            mujoco.mjr_readPixels(frames[t], None, self.rect, self._context)
        return frames[:, ::-1].copy()  # OpenGL rows run bottom-up

    def close(self) -> None:
        if self._gl is not None:
            self._context.free()
            self._gl.free()
            self._gl = None


class PendulumStateRenderer:
    """Pendulum-v1 drawn like gymnasium's: a rod from the centre, upright at angle 0.

    Drawn at 4x and downsampled, which anti-aliases the rod for a few hundred microseconds.
    """

    _SUPERSAMPLE = 4

    def __init__(self, width: int = 64, height: int = 64) -> None:
        self.width, self.height = width, height

    def render(self, states: np.ndarray) -> np.ndarray:
        """states [T, 3] (cos th, sin th, thdot) -> frames [T, H, W, 3] uint8."""
        k = self._SUPERSAMPLE
        w, h = self.width * k, self.height * k
        centre, length = np.array([w / 2, h / 2]), 0.4 * min(w, h)
        frames = np.empty((len(states), self.height, self.width, 3), np.uint8)
        for t, (cos, sin) in enumerate(np.asarray(states, np.float64)[:, :2]):
            angle = np.arctan2(sin, cos)
            tip = centre + length * np.array([-np.sin(angle), -np.cos(angle)])
            image = Image.new("RGB", (w, h), (255, 255, 255))
            draw = ImageDraw.Draw(image)
            draw.line([tuple(centre), tuple(tip)], fill=(204, 77, 77), width=int(0.08 * w))
            r = 0.03 * w
            draw.ellipse([*(centre - r), *(centre + r)], fill=(0, 0, 0))
            frames[t] = np.asarray(image.resize((self.width, self.height), Image.LANCZOS))
        return frames

    def close(self) -> None:
        """Nothing to free."""


def draw_ledge(states: np.ndarray, width: int = 64, height: int = 64) -> np.ndarray:
    """GustyLedge from above the rail: the edge (red), the goal (green), the cart; states [T, 2]
    (position, velocity) -> frames [T, H, W, 3] uint8, positions -1.5 .. 1.5 across the frame."""
    to_px = lambda x: (x + 1.5) / 3.0 * width  # noqa: E731
    frames = np.empty((len(states), height, width, 3), np.uint8)
    for t, position in enumerate(np.asarray(states, np.float64)[:, 0]):
        image = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        draw.rectangle([to_px(LEDGE_EDGE), 0, width, height], fill=(230, 180, 180))
        goal = to_px(LEDGE_GOAL)
        draw.line([goal, 0, goal, height], fill=(60, 160, 60), width=1)
        x = to_px(float(np.clip(position, -1.5, 1.5)))
        draw.rectangle([x - 0.05 * width, 0.4 * height, x + 0.05 * width, 0.6 * height],
                       fill=(40, 40, 40))  # fmt: skip
        frames[t] = np.asarray(image)
    return frames


class LedgeStateRenderer:
    """GustyLedge-v0 from above the rail: the ledge's edge (red), the goal (green), the cart."""

    def __init__(self, width: int = 64, height: int = 64) -> None:
        self.width, self.height = width, height

    def render(self, states: np.ndarray) -> np.ndarray:
        """states [T, 2] (position, velocity) -> frames [T, H, W, 3] uint8."""
        return draw_ledge(states, self.width, self.height)

    def close(self) -> None:
        """Nothing to free."""


def make_renderer(task: Task, width: int = 64, height: int = 64) -> StateRenderer | None:
    """The renderer for `task`, or None (with a warning) when it cannot be drawn here."""
    if task.id == "Pendulum-v1":
        return PendulumStateRenderer(width, height)
    if task.id == "GustyLedge-v0":
        return LedgeStateRenderer(width, height)
    try:
        return MujocoStateRenderer(task, width, height)
    except _NotDrawable as exc:
        warnings.warn(f"no video of {task.id}: {exc}", RuntimeWarning, stacklevel=2)
        return None
    except Exception as exc:  # GL backends fail with ImportError, OSError, FatalError, ...
        warnings.warn(
            f"cannot render {task.id} offscreen ({type(exc).__name__}: {exc}); skipping video. "
            "Headless rendering needs EGL (MUJOCO_GL=egl) or OSMesa (MUJOCO_GL=osmesa).",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
