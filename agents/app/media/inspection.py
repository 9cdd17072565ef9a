"""What the world model believes, in TensorBoard: videos, prediction figures, config and hparams.

`wm train` calls these at the end of its fit and `wm run` at its evaluations; every function takes
explicit arguments and logs through a `Logger`. `wm tensorboard` serves the runs on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from agents.app.media.figures import cost_figure, outcome_figure, prediction_figure
from agents.app.media.logger import Logger
from agents.app.media.video import side_by_side
from agents.configurator.config import Config
from agents.configurator.fields import to_dict
from envs import Task
from envs.render import StateRenderer, make_renderer
from worldmodel.cost.evaluate import RewardError
from worldmodel.data.store import EpisodeStore, Window
from worldmodel.errors import ConfigError
from worldmodel.forward.fit import MetricsSink
from worldmodel.forward.layers import eval_mode, mc_dropout
from worldmodel.forward.model import ForwardModel

HORIZON = 50
"""Steps imagined from a held-out state in the video and figures."""
SAMPLES = 4
"""Futures with different z drawn in the prediction figure."""
MASKS = 8
"""MC-dropout masks behind the uncertainty band."""
OUTCOME_SAMPLES = 512
"""One-step futures drawn for the outcome histograms of stochastic tasks."""
MAX_FPS = 50.0
"""Browsers slow GIF frames shorter than 20 ms down to 100 ms, so faster tasks play slowed."""


def _pick_window(store: EpisodeStore, horizon: int, seed: int) -> tuple[int, int] | None:
    """(start index, horizon) of one held-out window, the horizon cut to the longest episode."""
    if len(store) == 0:
        return None
    _, lengths = np.unique(store.data["episode"], return_counts=True)
    horizon = min(horizon, int(lengths.max()))
    starts = store.window_starts(horizon)
    return int(np.random.default_rng(seed).choice(starts)), horizon


@torch.no_grad()
def imagine(
    model: ForwardModel,
    s0: torch.Tensor,
    actions: torch.Tensor,
    samples: int = SAMPLES,
    masks: int = MASKS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Open-loop predictions from s0 [S] under actions [T, A], each including s0 as row 0.

    'mean' [T+1, S]: z = 0 (the prior's mean), dropout off. 'samples' [K, T+1, S]: z drawn from
    the prior (only for a stochastic model). 'low', 'high' [T+1, S]: mean ± 2 std over `masks`
    MC-dropout masks with z = 0 (only when the model has dropout).
    """
    horizon = actions.shape[0]
    was_training = model.training
    model.eval()

    def unroll(batch: int, z: torch.Tensor) -> np.ndarray:
        states = model.rollout(s0.expand(batch, -1), actions[:, None].expand(-1, batch, -1), z)
        return torch.cat([s0.expand(1, batch, -1), states]).transpose(0, 1).cpu().numpy()

    def zeros(batch: int) -> torch.Tensor:
        return s0.new_zeros(horizon, batch, model.latent_dim)

    out = {"mean": unroll(1, zeros(1))[0]}
    if model.stochastic:
        generator = torch.Generator(device=model.device).manual_seed(seed)
        out["samples"] = unroll(samples, model.sample_prior(horizon, samples, generator=generator))
    if any(isinstance(m, nn.Dropout) for m in model.modules()):
        # Dropout draws from torch's global generator: fork it so the band is reproducible.
        with torch.random.fork_rng(devices=[]), mc_dropout(model):
            torch.manual_seed(seed)
            spread = unroll(masks, zeros(masks))
        std = spread.std(0)
        out["low"], out["high"] = out["mean"] - 2 * std, out["mean"] + 2 * std
    model.train(was_training)
    return out


@torch.no_grad()
def _outcomes(task: Task, model: ForwardModel, window: Window, seed: int) -> Figure:
    """`outcome_figure` of OUTCOME_SAMPLES one-step prior samples from the window's first
    state and action, on the task's random dims."""
    s, a = window.obs[0], window.action[0]  # [1, S], [1, A]
    generator = torch.Generator(device=model.device).manual_seed(seed)
    batch = (OUTCOME_SAMPLES, 1)
    z = model.sample_prior(*batch, generator=generator)
    with eval_mode(model):
        samples = model.step(s.expand(*batch, -1), a.expand(*batch, -1), z)[:, 0].cpu().numpy()
    dims = list(task.random_dims)
    possible = None
    if task.outcomes is not None:
        possible = task.outcomes(s.cpu().numpy(), a.cpu().numpy())[:, 0, dims]
    real = window.obs[1, 0].cpu().numpy()
    return outcome_figure(samples[:, dims], real[dims], possible, [f"s[{i}]" for i in dims])


def log_imagination(
    logger: Logger,
    task: Task,
    model: ForwardModel,
    store: EpisodeStore,
    step: int,
    *,
    renderer: StateRenderer | None = None,
    horizon: int = HORIZON,
    samples: int = SAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """Real vs imagined video and per-dimension prediction figure on one window of `store`.

    The window is the same for a given seed and store, so successive calls show the model
    improving on the same futures. The video (only with a renderer) is real | z = 0 | sampled z,
    side by side. Logs 'imagination/*' and returns {'charts/inspection_seconds': wall time}.
    """
    start = time.perf_counter()
    picked = _pick_window(store, horizon, seed)
    if picked is None:
        return {}
    index, horizon = picked
    window = store.windows(np.array([index]), horizon).to(model.device)
    true = window.obs[:, 0].cpu().numpy()  # [T+1, S]
    predicted = imagine(model, window.obs[0, 0], window.action[:, 0], samples, seed=seed)
    band = (predicted["low"], predicted["high"]) if "low" in predicted else None
    figure = prediction_figure(true, predicted["mean"], predicted.get("samples"), band)
    logger.figure("imagination/predictions", figure, step)
    if model.stochastic and task.random_dims:
        logger.figure("imagination/one_step_outcomes", _outcomes(task, model, window, seed), step)
    if renderer is not None:
        columns = [true, predicted["mean"]]
        if "samples" in predicted:
            columns.append(predicted["samples"][0])
        frames = side_by_side(*(renderer.render(states) for states in columns))
        logger.video("imagination/real_vs_imagined", frames, step, fps=min(1 / task.dt, MAX_FPS))
    metrics = {"charts/inspection_seconds": time.perf_counter() - start}
    logger.scalars(metrics, step)
    return metrics


def inspect_model(
    logger: Logger,
    task: Task,
    model: ForwardModel,
    store: EpisodeStore,
    step: int,
    *,
    video: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """`log_imagination` with a renderer made and freed here (no video when it cannot render)."""
    renderer = make_renderer(task) if video else None
    try:
        return log_imagination(logger, task, model, store, step, renderer=renderer, seed=seed)
    finally:
        if renderer is not None:
            renderer.close()


def log_plan_vs_real(
    logger: Logger, planned: np.ndarray, realised: np.ndarray, step: int
) -> dict[str, float]:
    """Figure of the planner's predicted per-step cost vs the realised cost over an episode.

    planned, realised: [T]. Logs 'plan/predicted_vs_realised' and the mean absolute error
    'plan/cost_error', which it also returns.
    """
    planned, realised = np.asarray(planned, np.float64), np.asarray(realised, np.float64)
    if planned.shape != realised.shape or planned.ndim != 1:
        raise ValueError(
            f"planned and realised must both be [T], got {planned.shape} and {realised.shape}"
        )
    logger.figure("plan/predicted_vs_realised", cost_figure(planned, realised), step)
    metrics = {"plan/cost_error": float(np.mean(np.abs(planned - realised)))}
    logger.scalars(metrics, step)
    return metrics


def cost_log(sink: MetricsSink) -> MetricsSink:
    """A metrics sink that files the learned cost's fit under 'cost/' (cost/train/loss,
    cost/val/cost_error, ...), beside the world model's train/ and val/ tags."""
    return lambda metrics, step: sink({f"cost/{k}": v for k, v in metrics.items()}, step)


def reward_error_metrics(errors: list[RewardError]) -> dict[str, float]:
    """TensorBoard tags of k-step reward errors: val/reward_mse_{k} through the model, with the
    cost on the real transitions (`_real_states`) and the reward's variance (`_baseline`)."""
    metrics = {}
    for e in errors:
        metrics[f"val/reward_mse_{e.k}"] = e.model
        metrics[f"val/reward_mse_{e.k}_real_states"] = e.real_states
        metrics[f"val/reward_mse_{e.k}_baseline"] = e.baseline
    return metrics


def flat_config(config: Config) -> dict[str, Any]:
    """'group.field' -> value for every leaf of the config."""

    def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                out |= flatten(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value
        return out

    return flatten(to_dict(config))


def log_config(logger: Logger, config: Config) -> None:
    """The config as JSON in the Text tab (indented, so TensorBoard shows it as code)."""
    text = json.dumps(to_dict(config), indent=2)
    logger.text("config", "\n".join("    " + line for line in text.splitlines()))


def log_hparams(logger: Logger, config: Config, metrics: dict[str, float], step: int) -> None:
    """Every config field as a hyper-parameter, with the run's final `metrics` (HParams tab).

    Metric tags get the prefix 'hparams/' so they do not add points to the scalars they copy.
    """
    logger.hparams(flat_config(config), {f"hparams/{k}": v for k, v in metrics.items()}, step)


def tensorboard_command(logdir: str = "runs", port: int = 6006) -> list[str]:
    """The command that serves `logdir`, bound to the loopback interface only."""
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def launch_tensorboard(logdir: str = "runs", port: int = 6006) -> int:
    """Serve `logdir` on http://127.0.0.1:port until interrupted; returns TensorBoard's status.

    A port that is taken, or a TensorBoard that is not installed, is a one-line `ConfigError`
    before anything starts. Ctrl-C, SIGTERM (raised as an exception by `wm`) or any error here
    stops the child too, so no TensorBoard is left listening behind us.
    """
    if not tensorboard_installed():
        raise ConfigError("TensorBoard is not installed; pip install tensorboard")
    check_port_free(port)
    print(f"TensorBoard on http://127.0.0.1:{port}/ (Ctrl-C to stop)", flush=True)
    child = subprocess.Popen(tensorboard_command(logdir, port))
    try:
        return child.wait()
    finally:
        stop_child(child)


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def check_port_free(port: int) -> None:
    """A one-line error unless 127.0.0.1:`port` can be bound now, as TensorBoard will (it would
    print a screenful and exit 255 instead)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server does: a port whose old connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(
                f"cannot serve on port {port} of 127.0.0.1 ({exc.strerror}); pass another "
                "--port, or stop what listens there"
            ) from exc


def stop_child(child: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM `child` if it still runs, SIGKILL it after `grace` seconds; reap it."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
