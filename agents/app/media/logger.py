"""One small logger over TensorBoard's SummaryWriter; components return metrics, loops log them."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from agents.app.media.video import gif_summary


class Logger:
    """Scalars grouped by tag prefix (`charts/`, `losses/`, `val/`, ...) in one events file."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        """Log every finite value under its own tag."""
        for tag, value in metrics.items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def video(self, tag: str, frames: np.ndarray, step: int, fps: float = 20.0) -> None:
        """frames [T, H, W, 3] uint8 as an animated GIF (Images tab); needs no moviepy."""
        self.writer.file_writer.add_summary(gif_summary(tag, frames, fps), step)

    def figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib figure as an image; the figure is closed."""
        self.writer.add_figure(tag, figure, step, close=True)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
        """Hyper-parameters with their final metrics, in this run (HParams tab).

        `add_hparams` would open a second run in a sub-folder; the summaries are written here
        instead, and each metric also as a scalar, which is where the HParams tab reads it.
        Values other than bool/int/float/str are shown as text.
        """
        plain = {
            k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in hparams.items()
        }
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        for summary in hparams_summaries(plain, finite):
            self.writer.file_writer.add_summary(summary, step)
        self.scalars(finite, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Flush, then close: a write that failed in TensorBoard's writer thread (disk full,
        read-only) is raised here rather than lost with the events it dropped."""
        try:
            self.writer.flush()
        finally:
            self.writer.close()
