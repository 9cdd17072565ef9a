"""One small logger over TensorBoard's SummaryWriter; components return metrics, loops log them."""

from __future__ import annotations

import math
import os

from torch.utils.tensorboard import SummaryWriter


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

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
