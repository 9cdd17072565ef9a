"""Videos for TensorBoard as animated GIFs, encoded with PIL.

`SummaryWriter.add_video` writes nothing unless moviepy 1.x is installed (and moviepy 2 breaks
it); all it does with moviepy is encode a GIF into an image summary. This module does the same
with PIL, so the video always lands in the events file and TensorBoard's Images tab plays it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(
            f"frames must be uint8 [T, H, W, 3] with T > 0, got {frames.dtype} {frames.shape}"
        )
    return frames


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """Frames [T, H, W, 3] uint8 -> an endlessly looping GIF.

    Each frame gets its own 256-colour palette (no dithering: renders have few colours, and
    dithering noise would only make the file larger). PIL merges consecutive identical frames
    into one longer frame, so the decoded frame count can be below T while playback time is kept.
    """
    frames = _check_frames(frames)
    images = [
        Image.fromarray(f).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        for f in frames
    ]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(round(1000 / fps), 20),
        loop=0,
    )
    return buffer.getvalue()


def gif_summary(tag: str, frames: np.ndarray, fps: float) -> Summary:
    """An image summary holding the GIF of frames [T, H, W, 3] (what add_video would write)."""
    frames = _check_frames(frames)
    _, height, width, channels = frames.shape
    image = Summary.Image(
        height=height,
        width=width,
        colorspace=channels,
        encoded_image_string=encode_gif(frames, fps),
    )
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def side_by_side(*videos: np.ndarray, gap: int = 2) -> np.ndarray:
    """Videos [T, H, W_i, 3] placed left to right with `gap` grey columns between them.

    Shorter videos hold their last frame, so a real episode that ended early still lines up.
    """
    videos = tuple(_check_frames(v) for v in videos)
    length = max(len(v) for v in videos)
    height = videos[0].shape[1]
    if any(v.shape[1] != height for v in videos):
        raise ValueError("videos placed side by side must have the same height")
    spacer = np.full((length, height, gap, 3), 128, np.uint8)
    padded = [np.concatenate([v, np.repeat(v[-1:], length - len(v), axis=0)]) for v in videos]
    parts = [p for v in padded for p in (spacer, v)][1:]
    return np.concatenate(parts, axis=2)
