"""Real experience: the episode store (time-major windows, split by episode) and rollouts of an
actor in a gymnasium env that fill it."""

from worldmodel.data.rollout import EpisodeResult, collect, random_policy, run_episode
from worldmodel.data.store import EpisodeStore, Stats, Window

__all__ = [
    "EpisodeResult",
    "EpisodeStore",
    "Stats",
    "Window",
    "collect",
    "random_policy",
    "run_episode",
]
