import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from agents.app.cli import main
from agents.app.media.inspection import HORIZON, imagine, log_plan_vs_real, tensorboard_command
from agents.app.media.logger import Logger
from agents.app.media.video import encode_gif, side_by_side
from agents.configurator import build_model
from agents.configurator.config import ModelConfig
from envs import make_task

TINY = [
    "--steps",
    "600",
    "--train.max_steps",
    "10",
    "--train.eval_every",
    "5",
    "--model.hidden",
    "16",
    "--train.batch_size",
    "16",
    "--no-progress",
]
EVERYTHING = {"images": 0, "scalars": 0, "tensors": 0}


def events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance=EVERYTHING)
    acc.Reload()
    return acc


def gif_frames(encoded: bytes) -> list[np.ndarray]:
    image = Image.open(io.BytesIO(encoded))
    assert image.format == "GIF"
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]


@pytest.fixture(scope="module")
def train_events(tmp_path_factory) -> EventAccumulator:
    runs = tmp_path_factory.mktemp("runs")
    args = ["train", "--env", "Pendulum-v1", "--seed", "2", "--runs_dir", str(runs), *TINY]
    assert main(args) == 0
    (run,) = runs.iterdir()
    return events(run)


def test_train_logs_a_real_vs_imagined_video(train_events: EventAccumulator) -> None:
    (video,) = train_events.Images("imagination/real_vs_imagined")
    frames = gif_frames(video.encoded_image_string)
    # real | z = 0 | sampled z, 64 px each with 2 px gaps; one frame per state s[0..H]
    assert (video.width, video.height) == (3 * 64 + 2 * 2, 64)
    assert len(frames) == HORIZON + 1 and frames[0].shape == (64, 196, 3)
    assert not np.array_equal(frames[0], frames[-1])


def test_train_logs_prediction_figures_scalars_hparams_and_config(
    train_events: EventAccumulator,
) -> None:
    (figure,) = train_events.Images("imagination/predictions")
    assert Image.open(io.BytesIO(figure.encoded_image_string)).format == "PNG"
    assert {"val/loss", "val/k_step_mse_10", "charts/inspection_seconds"} <= set(
        train_events.Tags()["scalars"]
    )

    content = train_events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["env"].string_value == "Pendulum-v1"
    assert hparams["model.hidden"].number_value == 16
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"hparams/k_step_mse_10", "hparams/best_val_loss"} <= metrics
    assert metrics <= set(train_events.Tags()["scalars"])  # the HParams tab reads them there

    (text,) = train_events.Tensors("config/text_summary")
    config = json.loads(text.tensor_proto.string_val[0].decode())
    assert config["env"] == "Pendulum-v1" and config["model"]["hidden"] == 16


def test_video_round_trips_through_the_events_file(tmp_path: Path) -> None:
    frames = np.zeros((7, 16, 24, 3), np.uint8)
    for t in range(7):
        frames[t, :, 3 * t : 3 * t + 3] = (255, 0, 0)  # a bar moving right
    logger = Logger(tmp_path)
    logger.video("clip", frames, step=3, fps=10)
    logger.close()
    (video,) = events(tmp_path).Images("clip")
    assert video.step == 3
    decoded = gif_frames(video.encoded_image_string)
    assert len(decoded) == 7
    np.testing.assert_array_equal(np.stack(decoded), frames)  # few colours: lossless
    assert Image.open(io.BytesIO(video.encoded_image_string)).info["duration"] == 100


def test_plan_vs_real_logs_a_figure_and_the_error(tmp_path: Path) -> None:
    logger = Logger(tmp_path)
    metrics = log_plan_vs_real(logger, np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]), 5)
    logger.close()
    assert metrics == {"plan/cost_error": pytest.approx(1.0)}
    acc = events(tmp_path)
    assert len(acc.Images("plan/predicted_vs_realised")) == 1
    assert acc.Scalars("plan/cost_error")[0].value == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[T\]"):
        log_plan_vs_real(Logger(tmp_path), np.zeros(3), np.zeros(4), 0)


def test_imagine_is_seeded_and_shaped_and_leaves_the_model_mode() -> None:
    task = make_task("Pendulum-v1")
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=16, layers=1), 3, 1).train()
    s0, actions = torch.tensor([1.0, 0.0, 0.5]), torch.rand(12, 1) * 2 - 1
    first = imagine(model, s0, actions, samples=3, masks=4, seed=7)
    again = imagine(model, s0, actions, samples=3, masks=4, seed=7)
    assert model.training
    assert first["mean"].shape == (13, task.obs_dim) and first["samples"].shape == (3, 13, 3)
    for key in ("mean", "samples", "low", "high"):
        np.testing.assert_array_equal(first[key], again[key])
        assert (first[key][..., 0, :] == s0.numpy()).all()  # row 0 is the start state
    assert (first["low"] <= first["mean"]).all() and (first["high"] >= first["mean"]).all()
    assert (first["high"] - first["low"])[1:].min() > 0  # dropout does spread the futures

    plain = build_model(ModelConfig(kind="deterministic", dropout=0.0, hidden=16), 3, 1)
    assert set(imagine(plain, s0, actions)) == {"mean"}


def test_side_by_side_pads_the_shorter_video_and_bad_frames_are_refused() -> None:
    a, b = np.zeros((5, 4, 3, 3), np.uint8), np.full((3, 4, 2, 3), 9, np.uint8)
    both = side_by_side(a, b, gap=1)
    assert both.shape == (5, 4, 6, 3)
    assert (both[4, :, 4:] == 9).all()  # b holds its last frame
    with pytest.raises(ValueError, match="uint8"):
        encode_gif(np.zeros((2, 4, 4, 3), np.float32), fps=10)


def test_tensorboard_listens_on_loopback_only() -> None:
    command = tensorboard_command("runs", 6007)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "6007"
