"""Episode store: real transitions, split by episode, sampled as time-major windows."""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from worldmodel.errors import DataError
from worldmodel.io.atomic import atomic_write_bytes

_FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Window:
    """H consecutive transitions of one episode, time-major.

    obs: [H+1, B, S] real states s[t..t+H]; action: [H, B, A]; reward: [H, B];
    terminated: [H, B] whether the env ended at that step; mask: [H, B] bool, False for the
    steps after a termination that ended the window's episode early (None: every step is real).
    Past a termination obs repeats the terminal state and action, reward and terminated are 0:
    losses weigh each step by the mask, so a window is trained on up to its termination.
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    terminated: Tensor
    mask: Tensor | None = None

    @property
    def horizon(self) -> int:
        return self.action.shape[0]

    def step_mask(self) -> Tensor:
        """The mask [H, B] as floats in the states' dtype (ones where `mask` is None)."""
        if self.mask is None:
            return self.reward.new_ones(self.reward.shape, dtype=self.obs.dtype)
        return self.mask.to(self.obs.dtype)

    def to(self, device: torch.device | str) -> Window:
        mask = None if self.mask is None else self.mask.to(device)
        tensors = (getattr(self, f).to(device) for f in ("obs", "action", "reward", "terminated"))
        return Window(*tensors, mask=mask)


@dataclass(frozen=True)
class Stats:
    """Per-dimension mean and std of states and of one-step deltas s[t+1] - s[t]. Each [S]."""

    state_mean: Tensor
    state_std: Tensor
    delta_mean: Tensor
    delta_std: Tensor


def _empty_dtype(field: str) -> type:
    """The dtype the store keeps `field` in."""
    return {"terminated": bool, "truncated": bool, "episode": np.int64}.get(field, np.float32)


class EpisodeStore:
    """Transitions stored flat, episodes contiguous, in insertion order.

    A step is the last of its episode when the next step has another episode id; the store never
    mixes steps of two episodes in one window. With `capacity`, the oldest whole episodes are
    dropped first (FIFO by episode) once the store holds more than `capacity` steps, but the
    newest episode is always kept whole.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int | None = None) -> None:
        if obs_dim <= 0 or act_dim <= 0:
            raise DataError(f"obs_dim and act_dim must be positive, got {obs_dim} and {act_dim}")
        if capacity is not None and capacity <= 0:
            raise DataError(f"capacity must be positive, got {capacity}")
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, capacity
        self._chunks: list[dict[str, np.ndarray]] = []
        self._flat: dict[str, np.ndarray] | None = self._empty()
        self._next_episode = 0
        # Indices of the data (episode ends, window starts), built once per version of it.
        self._indexed: np.ndarray | None = None
        self._indices: dict[tuple, np.ndarray] = {}

    def _empty(self) -> dict[str, np.ndarray]:
        return {
            "obs": np.zeros((0, self.obs_dim), np.float32),
            "action": np.zeros((0, self.act_dim), np.float32),
            "reward": np.zeros((0,), np.float32),
            "next_obs": np.zeros((0, self.obs_dim), np.float32),
            "terminated": np.zeros((0,), bool),
            "truncated": np.zeros((0,), bool),
            "episode": np.zeros((0,), np.int64),
        }

    @property
    def data(self) -> dict[str, np.ndarray]:
        """Flat arrays, each [N, ...]; concatenated lazily so adding a step stays O(1)."""
        if self._flat is None or self._chunks:
            parts = ([self._flat] if self._flat is not None else []) + self._chunks
            self._flat = {k: np.concatenate([p[k] for p in parts]) for k in _FIELDS}
            self._chunks = []
        return self._flat

    def __len__(self) -> int:
        return len(self.data["reward"])

    @property
    def num_episodes(self) -> int:
        return len(np.unique(self.data["episode"]))

    def add_episode(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Append one episode (or a piece of one that ends it): arrays [n, ...] of one episode."""
        n = len(reward)
        chunk = {
            "obs": np.asarray(obs, np.float32).reshape(n, self.obs_dim),
            "action": np.asarray(action, np.float32).reshape(n, self.act_dim),
            "reward": np.asarray(reward, np.float32).reshape(n),
            "next_obs": np.asarray(next_obs, np.float32).reshape(n, self.obs_dim),
            "terminated": np.asarray(terminated, bool).reshape(n),
            "truncated": np.asarray(truncated, bool).reshape(n),
            "episode": np.full(n, self._next_episode, np.int64),
        }
        for key in ("obs", "action", "reward", "next_obs"):
            if not np.isfinite(chunk[key]).all():
                raise DataError(f"episode has non-finite values in '{key}'; drop it or fix the env")
        self._chunks.append(chunk)
        self._next_episode += 1
        self._enforce_capacity()

    def _enforce_capacity(self) -> None:
        if self.capacity is None or len(self) <= self.capacity:
            return
        episode = self.data["episode"]
        # Drop whole episodes from the front; keep at least the newest one.
        starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
        excess = len(episode) - self.capacity
        cut = starts[np.searchsorted(starts, excess)] if excess <= starts[-1] else starts[-1]
        # Copies, not views: a view would keep the whole old array (and its memory) alive.
        self._flat = {k: v[cut:].copy() for k, v in self.data.items()}

    @property
    def next_episode(self) -> int:
        """The id the next added episode gets (episodes ever added, dropped ones included)."""
        return self._next_episode

    def drop_newer(self, next_episode: int) -> None:
        """Forget every episode with id >= `next_episode` (to match an older checkpoint)."""
        keep = self.data["episode"] < next_episode
        self._flat = {k: v[keep].copy() for k, v in self.data.items()}
        self._next_episode = min(self._next_episode, next_episode)

    def episodes(self) -> Iterator[dict[str, np.ndarray]]:
        """Each episode's arrays, in order."""
        data = self.data
        bounds = np.flatnonzero(np.diff(data["episode"])) + 1
        for idx in np.split(np.arange(len(self)), bounds):
            if len(idx):
                yield {k: v[idx] for k, v in data.items()}

    def split(self, val_fraction: float, seed: int) -> tuple[EpisodeStore, EpisodeStore]:
        """Train and validation stores with disjoint episodes (at least one in each if possible)."""
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
        ids = np.unique(self.data["episode"])
        rng = np.random.default_rng(seed)
        n_val = min(max(1, round(val_fraction * len(ids))), len(ids) - 1) if len(ids) > 1 else 0
        val_ids = rng.permutation(ids)[:n_val]
        is_val = np.isin(self.data["episode"], val_ids)
        return self._subset(~is_val), self._subset(is_val)

    def _subset(self, mask: np.ndarray) -> EpisodeStore:
        out = EpisodeStore(self.obs_dim, self.act_dim)
        out._flat = {k: v[mask] for k, v in self.data.items()}
        out._next_episode = self._next_episode
        return out

    def window_starts(self, horizon: int, terminal: bool = False) -> np.ndarray:
        """Indices i whose steps i..i+horizon-1 lie in one episode, [M]; with `terminal` also
        those whose episode terminates (not truncates) before i+horizon-1: their windows are
        masked after the termination. Built once per version of the data (read-only), so
        sampling a batch costs the same however much data there is."""
        if horizon <= 0:
            raise DataError(f"horizon must be positive, got {horizon}")
        return self._index(("starts", horizon, terminal), lambda: self._starts(horizon, terminal))

    def _starts(self, horizon: int, terminal: bool) -> np.ndarray:
        episode = self.data["episode"]
        if terminal:
            ends = self._episode_ends()
            whole = np.arange(len(episode)) + horizon - 1 <= ends
            return np.flatnonzero(whole | self.data["terminated"][ends])
        if len(episode) < horizon:
            return np.zeros(0, np.int64)
        return np.flatnonzero(episode[: len(episode) - horizon + 1] == episode[horizon - 1 :])

    def _episode_ends(self) -> np.ndarray:
        """Index of the last step of each step's episode, [N]."""

        def build() -> np.ndarray:
            episode = self.data["episode"]
            last = np.flatnonzero(np.r_[episode[1:] != episode[:-1], True]) if len(episode) else []
            return np.repeat(last, np.diff(np.r_[-1, last])).astype(np.int64)

        return self._index(("ends",), build)

    def _index(self, key: tuple, build: Callable[[], np.ndarray]) -> np.ndarray:
        """`build()`, kept until the data changes: any change makes a new episode-id array."""
        episode = self.data["episode"]
        if self._indexed is not episode:
            self._indexed, self._indices = episode, {}
        if key not in self._indices:
            self._indices[key] = build()
            self._indices[key].setflags(write=False)
        return self._indices[key]

    def windows(self, starts: np.ndarray, horizon: int) -> Window:
        """Windows beginning at `starts` [B], as float32 tensors on the CPU; a window that runs
        past its episode's end is masked there (`Window`)."""
        data = self.data
        idx = starts[None, :] + np.arange(horizon)[:, None]  # [H, B]
        ends = self._episode_ends()[starts] if len(starts) else np.zeros(0, np.int64)
        past = idx > ends  # [H, B]
        if not past.any():
            obs = np.concatenate([data["obs"][idx], data["next_obs"][idx[-1:]]], axis=0)
            return Window(
                obs=torch.from_numpy(obs),
                action=torch.from_numpy(data["action"][idx]),
                reward=torch.from_numpy(data["reward"][idx]),
                terminated=torch.from_numpy(data["terminated"][idx]),
            )
        idx = np.minimum(idx, ends)
        final = data["next_obs"][ends]  # [B, S] the state the episode ended in
        states = np.where(past[..., None], final, data["obs"][idx])
        obs = np.concatenate([states, data["next_obs"][idx[-1:]]], axis=0)
        return Window(
            obs=torch.from_numpy(obs),
            action=torch.from_numpy(_zero_where(past, data["action"][idx])),
            reward=torch.from_numpy(_zero_where(past, data["reward"][idx])),
            terminated=torch.from_numpy(_zero_where(past, data["terminated"][idx])),
            mask=torch.from_numpy(~past),
        )

    def spaced_windows(self, horizon: int, count: int, terminal: bool = False) -> Window:
        """Up to `count` windows at evenly spaced valid starts (`window_starts`): deterministic,
        no RNG."""
        starts = self.window_starts(horizon, terminal)
        if len(starts) > count:
            starts = starts[np.linspace(0, len(starts) - 1, count).round().astype(np.int64)]
        return self.windows(starts, horizon)

    def sample(
        self, batch_size: int, horizon: int, rng: np.random.Generator, terminal: bool = False
    ) -> Window:
        """`batch_size` windows of `horizon` steps drawn uniformly among the valid starts
        (`window_starts`: with `terminal`, windows that end in a termination too)."""
        starts = self.window_starts(horizon, terminal)
        if len(starts) == 0:
            raise DataError(f"no episode is longer than the horizon {horizon}; collect more steps")
        return self.windows(rng.choice(starts, size=batch_size), horizon)

    def stats(self) -> Stats:
        """Normalisation statistics; a floor on std keeps constant dims from exploding."""
        data = self.data
        if len(self) == 0:
            raise DataError("cannot compute statistics of an empty store; collect steps first")
        delta = data["next_obs"] - data["obs"]
        as_t = lambda x: torch.from_numpy(x.astype(np.float32))  # noqa: E731
        return Stats(
            state_mean=as_t(data["obs"].mean(0)),
            state_std=as_t(np.maximum(data["obs"].std(0), 1e-6)),
            delta_mean=as_t(delta.mean(0)),
            delta_std=as_t(np.maximum(delta.std(0), 1e-6)),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write a compressed npz atomically: a crash never leaves a half-written file."""
        buffer = io.BytesIO()
        meta = np.array([FORMAT_VERSION, self.obs_dim, self.act_dim, self._next_episode], np.int64)
        np.savez_compressed(buffer, _meta=meta, **self.data)
        atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        capacity: int | None = None,
        *,
        obs_dim: int | None = None,
        act_dim: int | None = None,
    ) -> EpisodeStore:
        """Read a store written by `save`, checking its format, shapes and values.

        `obs_dim` / `act_dim`, when given, are what the caller's model expects of the data.
        """
        path = Path(path)
        arrays, (version, file_obs_dim, file_act_dim, next_episode) = _read_npz(path)
        if version > FORMAT_VERSION:
            raise DataError(f"data file {path} has format {version}; upgrade worldmodel to read it")
        _check_arrays(path, arrays, file_obs_dim, file_act_dim)
        if (obs_dim not in (None, file_obs_dim)) or (act_dim not in (None, file_act_dim)):
            raise DataError(
                f"data file {path} has obs/action dims {file_obs_dim}/{file_act_dim} but the "
                f"model expects {obs_dim}/{act_dim}; is it this run's data?"
            )
        obs_dim, act_dim = file_obs_dim, file_act_dim
        # The dtypes `add_episode` stores (no copy when they already match).
        arrays = {k: v.astype(_empty_dtype(k), copy=False) for k, v in arrays.items()}
        store = cls(obs_dim, act_dim, capacity)
        store._flat = arrays
        store._next_episode = next_episode
        store._enforce_capacity()
        return store


def _zero_where(past: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` [H, B, ...] with the steps where `past` [H, B] is True set to zero."""
    return np.where(past.reshape(past.shape + (1,) * (values.ndim - 2)), 0, values).astype(
        values.dtype
    )


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """The arrays of a store's npz and its header (version, obs_dim, act_dim, next episode)."""
    if path.is_dir():
        raise DataError(
            f"data file {path} is a folder, not a file; move it away, re-collect the data"
        )
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; pass a run folder that has one")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle
        raise DataError(
            f"data file {path} is corrupt or incomplete (not an npz archive); re-collect the data"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in (*_FIELDS, "_meta")}
        meta = arrays.pop("_meta")
        if meta.shape != (4,) or meta.dtype.kind not in "iu":
            raise ValueError(f"bad header {meta!r}")
    # zlib.error: a damaged compressed member; MemoryError: a damaged header's huge shape.
    except (
        zipfile.BadZipFile,
        zlib.error,
        KeyError,
        ValueError,
        OSError,
        EOFError,
        MemoryError,
    ) as exc:
        raise DataError(
            f"data file {path} is corrupt or incomplete ({exc}); re-collect the data"
        ) from exc
    return arrays, tuple(int(x) for x in meta)


def _check_arrays(path: Path, arrays: dict[str, np.ndarray], obs_dim: int, act_dim: int) -> None:
    """Shapes and types consistent with the header's dims, values finite: else a `DataError`."""
    n = len(arrays["reward"]) if arrays["reward"].ndim else -1
    expected = {
        "obs": (n, obs_dim),
        "action": (n, act_dim),
        "reward": (n,),
        "next_obs": (n, obs_dim),
        "terminated": (n,),
        "truncated": (n,),
        "episode": (n,),
    }
    wrong = [k for k, shape in expected.items() if arrays[k].shape != shape]
    wrong += [k for k in _FIELDS if arrays[k].dtype.kind not in "fbiu"]
    if wrong or min(obs_dim, act_dim) <= 0:
        raise DataError(
            f"data file {path} has inconsistent array shapes or types ({', '.join(wrong)}); "
            "re-collect the data"
        )
    for key in ("obs", "action", "reward", "next_obs"):
        if not np.isfinite(arrays[key]).all():
            raise DataError(f"data file {path} has NaN or inf in '{key}'; re-collect the data")
