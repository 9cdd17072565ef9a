"""EpisodeStore in memory: adding episodes, capacity, windows and sampling, the split, stats."""

import numpy as np
import pytest
import torch
from store_cases import _episode, make_store

from worldmodel.data.store import EpisodeStore
from worldmodel.errors import DataError


@pytest.mark.parametrize("horizon", [1, 3, 7])
def test_windows_never_cross_an_episode_end(horizon: int) -> None:
    store = make_store([5, 1, 9, 7, 2])
    window = store.sample(4096, horizon, np.random.default_rng(0))
    assert window.obs.shape == (horizon + 1, 4096, 3)
    assert window.action.shape == (horizon, 4096, 2)
    episode, step = window.obs[..., 0], window.obs[..., 1]
    assert (episode == episode[0]).all(), "a window mixes two episodes"
    assert (step.diff(dim=0) == 1).all(), "a window skips or repeats a step"
    lengths = torch.tensor([5, 1, 9, 7, 2], dtype=torch.float32)
    assert (step[-1] <= lengths[episode[0].long()]).all()


def test_window_starts_cover_every_valid_start_and_only_those() -> None:
    store = make_store([3, 5])
    assert store.window_starts(3).tolist() == [0, 3, 4, 5]
    assert store.window_starts(6).tolist() == []


def test_split_is_by_episode_and_disjoint() -> None:
    store = make_store([4] * 20)
    train, val = store.split(0.25, seed=0)
    train_eps = set(train.data["obs"][:, 0].tolist())
    val_eps = set(val.data["obs"][:, 0].tolist())
    assert len(val_eps) == 5 and len(train_eps) == 15
    assert not train_eps & val_eps
    assert len(train) + len(val) == len(store)


def test_non_finite_episode_is_refused() -> None:
    store = EpisodeStore(1, 1)
    with pytest.raises(DataError, match="non-finite"):
        store.add_episode([[np.nan]], [[0.0]], [0.0], [[0.0]], [False], [False])
    assert len(store) == 0


def test_capacity_drops_oldest_whole_episodes() -> None:
    store = EpisodeStore(3, 2, capacity=10)
    for n in [4, 4, 4, 4]:
        store.add_episode(*(a for a in _episode(n)))
        assert len(store) <= 10
    assert store.num_episodes == 2 and len(store) == 8


def test_stats_match_numpy() -> None:
    store = make_store([5, 9])
    stats = store.stats()
    np.testing.assert_allclose(stats.state_mean.numpy(), store.data["obs"].mean(0), rtol=1e-6)
    delta = store.data["next_obs"] - store.data["obs"]
    np.testing.assert_allclose(stats.delta_mean.numpy(), delta.mean(0), rtol=1e-6)
    assert (stats.delta_std > 0).all(), "constant dims must get a positive std floor"


def test_a_window_moves_every_field_to_the_device_asked_for() -> None:
    window = make_store([5]).windows(np.array([0, 1]), 3)
    moved = window.to("meta")  # a device every machine has: tensors without data
    assert [t.device.type for t in (moved.obs, moved.action, moved.reward, moved.terminated)] == [
        "meta"
    ] * 4
    assert moved.horizon == 3


@pytest.mark.parametrize(("obs_dim", "act_dim"), [(0, 2), (3, 0), (-1, 2), (0, 0)])
def test_dims_that_are_not_positive_are_refused(obs_dim: int, act_dim: int) -> None:
    with pytest.raises(DataError, match="obs_dim and act_dim must be positive"):
        EpisodeStore(obs_dim, act_dim)


def test_a_capacity_of_zero_is_refused_and_of_one_accepted() -> None:
    with pytest.raises(DataError, match="capacity must be positive, got 0"):
        EpisodeStore(3, 2, capacity=0)
    store = EpisodeStore(3, 2, capacity=1)
    store.add_episode(*_episode(1))
    assert len(store) == 1 and EpisodeStore(1, 1).obs_dim == 1


def test_per_step_columns_are_flattened_and_flags_stored_as_bools() -> None:
    store = EpisodeStore(3, 2)
    n = 3
    # Per-step values as columns [n, 1] and flags as floats, as a vectorised env may give them.
    store.add_episode(np.zeros((n, 3)), np.zeros((n, 2)), np.arange(n)[:, None],
                      np.zeros((n, 3)), np.array([[0.0], [0.0], [1.0]]),
                      np.array([[0.0], [1.0], [0.0]]))  # fmt: skip
    data = store.data
    assert {k: data[k].shape for k in ("reward", "terminated", "truncated", "episode")} == {
        k: (n,) for k in ("reward", "terminated", "truncated", "episode")
    }
    assert data["terminated"].dtype == np.bool_ and data["truncated"].dtype == np.bool_
    assert data["terminated"].tolist() == [False, False, True]
    assert data["truncated"].tolist() == [False, True, False]
    assert data["episode"].dtype == np.int64


def test_a_first_episode_beyond_capacity_is_kept_whole() -> None:
    store = EpisodeStore(3, 2, capacity=5)
    store.add_episode(*_episode(10))
    assert len(store) == 10 and store.num_episodes == 1


def test_past_capacity_only_the_newest_episode_is_kept() -> None:
    store = EpisodeStore(3, 2, capacity=5)
    for n in (2, 2, 10):
        store.add_episode(*_episode(n))
    # 14 steps, 9 too many: more than the two older episodes hold, so only the newest stays.
    assert len(store) == 10 and store.data["episode"].tolist() == [2] * 10


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1])
def test_a_val_fraction_outside_the_open_unit_interval_is_refused(fraction: float) -> None:
    with pytest.raises(DataError, match=r"val_fraction must be in \(0, 1\)"):
        make_store([4] * 5).split(fraction, seed=0)


def _val_episodes(store: EpisodeStore, fraction: float, seed: int) -> list[int]:
    return sorted(set(store.split(fraction, seed=seed)[1].data["episode"].tolist()))


def test_the_split_is_reproducible_by_seed_and_differs_between_seeds() -> None:
    store = make_store([2] * 30)
    assert _val_episodes(store, 0.3, seed=5) == _val_episodes(store, 0.3, seed=5)
    draws = {tuple(_val_episodes(store, 0.3, seed=s)) for s in range(4)}
    assert len(draws) == 4 and all(len(d) == 9 for d in draws)


@pytest.mark.parametrize(
    ("episodes", "fraction", "n_val"),
    [(1, 0.5, 0), (2, 0.5, 1), (2, 0.1, 1), (10, 0.04, 1), (3, 0.9, 2), (3, 0.99, 2)],
)
def test_the_split_keeps_at_least_one_episode_on_each_side_where_it_can(
    episodes: int, fraction: float, n_val: int
) -> None:
    store = make_store([3] * episodes)
    train, val = store.split(fraction, seed=0)
    assert val.num_episodes == n_val and train.num_episodes == episodes - n_val
    assert train.next_episode == val.next_episode == store.next_episode == episodes


def test_a_horizon_of_zero_is_refused() -> None:
    store = make_store([3])
    with pytest.raises(DataError, match="horizon must be positive, got 0"):
        store.window_starts(0)
    assert store.window_starts(1).tolist() == [0, 1, 2]


def test_an_episode_exactly_as_long_as_the_horizon_gives_one_window() -> None:
    store = make_store([3])
    assert store.window_starts(3).tolist() == [0]
    window = store.sample(4, 3, np.random.default_rng(0))
    assert window.obs[0, :, 1].tolist() == [0.0] * 4  # every draw starts at step 0
    with pytest.raises(DataError, match="no episode is longer than the horizon 4"):
        store.sample(4, 4, np.random.default_rng(0))


def test_a_store_without_a_long_enough_episode_gives_no_windows_not_an_error() -> None:
    store = make_store([3])  # fewer steps than the horizon
    starts = store.window_starts(4)
    assert starts.tolist() == [] and starts.dtype == np.int64  # an index array, if empty
    assert store.spaced_windows(4, count=8).action.shape[1] == 0


def test_stats_of_an_empty_store_are_refused_and_of_one_step_given() -> None:
    message = r"^cannot compute statistics of an empty store; collect steps first$"
    with pytest.raises(DataError, match=message):
        EpisodeStore(3, 2).stats()
    stats = make_store([1]).stats()
    assert stats.state_mean.tolist() == [0.0, 0.0, 0.0]
    assert stats.delta_mean.tolist() == [0.0, 1.0, 0.0]


def test_stds_are_numpys_with_a_floor_of_1e_6_on_constant_dims() -> None:
    rng = np.random.default_rng(0)
    store = EpisodeStore(2, 1)
    obs = np.stack([rng.normal(0, 0.1, 50), np.full(50, 3.0)], 1)
    next_obs = obs + np.stack([rng.normal(0, 0.01, 50), np.zeros(50)], 1)
    store.add_episode(obs, np.zeros((50, 1)), np.zeros(50), next_obs, np.zeros(50), np.zeros(50))
    stats = store.stats()
    assert all(t.dtype == torch.float32 for t in vars(stats).values())
    data = store.data
    delta = data["next_obs"] - data["obs"]
    np.testing.assert_allclose(stats.state_std[0].item(), data["obs"][:, 0].std(), rtol=1e-6)
    np.testing.assert_allclose(stats.delta_std[0].item(), delta[:, 0].std(), rtol=1e-6)
    assert stats.state_std[1].item() == stats.delta_std[1].item() == np.float32(1e-6)


def test_drop_newer_forgets_exactly_the_episodes_from_that_id_on() -> None:
    """Episodes 0, 1, 2; `drop_newer(1)` keeps episode 0 only (not 1) and the next episode added
    gets id 1 again; dropping beyond the newest changes nothing."""
    store = make_store([4, 3, 2])
    store.drop_newer(3)
    assert len(store) == 9 and store.next_episode == 3
    store.drop_newer(1)
    assert store.data["episode"].tolist() == [0] * 4 and store.next_episode == 1
    np.testing.assert_array_equal(store.data["obs"][:, 1], np.arange(4))
    store.add_episode(*_episode(2))
    assert store.data["episode"].tolist() == [0] * 4 + [1] * 2


def _brute_force_starts(episode_lengths: list[int], horizon: int) -> list[int]:
    """Every flat index i such that steps i .. i + horizon - 1 are all of one episode."""
    ids = [e for e, n in enumerate(episode_lengths) for _ in range(n)]
    return [
        i
        for i in range(len(ids))
        if i + horizon <= len(ids) and len(set(ids[i : i + horizon])) == 1
    ]


@pytest.mark.parametrize("horizon", [1, 2, 3, 5, 9, 10])
def test_window_starts_equal_a_brute_force_enumeration(horizon: int) -> None:
    """Episodes of 5, 1, 9, 7, 2 steps: the valid starts are exactly those found by checking
    every index, and the windows there hold the episode's consecutive steps."""
    lengths = [5, 1, 9, 7, 2]
    store = make_store(lengths)
    starts = store.window_starts(horizon)
    assert starts.tolist() == _brute_force_starts(lengths, horizon)
    if len(starts):
        window = store.windows(starts, horizon)
        offsets = np.cumsum([0, *lengths])[store.data["episode"][starts]]
        np.testing.assert_array_equal(window.obs[0, :, 1].numpy(), starts - offsets)
        np.testing.assert_array_equal(
            window.obs[:, :, 1].numpy(), (starts - offsets)[None] + np.arange(horizon + 1)[:, None]
        )


def test_sampling_draws_every_valid_start_uniformly() -> None:
    """20,000 windows of 3 steps from episodes of 5 and 4 steps: the 5 valid starts [0, 1, 2, 5,
    6] each come up a fifth of the time (within 0.02), and no other start ever."""
    store = make_store([5, 4])
    window = store.sample(20_000, 3, np.random.default_rng(0))
    flat = window.obs[0, :, 0].numpy() * 5 + window.obs[0, :, 1].numpy()  # episode 1 starts at 5
    values, counts = np.unique(flat, return_counts=True)
    assert values.tolist() == [0, 1, 2, 5, 6]
    np.testing.assert_allclose(counts / 20_000, 0.2, atol=0.02)


def test_a_window_holds_the_steps_fields_and_the_last_next_obs() -> None:
    """The window at start 1 of a 5-step episode: obs s[1..4] (s[4] the last next_obs), actions,
    rewards 1, 2, 3 and the episode's end flag at its step."""
    store = make_store([5])
    window = store.windows(np.array([1, 2]), 3)
    assert window.obs[:, 0, 1].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert window.obs[:, 1, 1].tolist() == [2.0, 3.0, 4.0, 5.0]  # the end's next_obs
    assert window.reward[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert window.terminated[:, 1].tolist() == [False, False, True]
    assert window.action.tolist() == [[[1.0, 1.0]] * 2] * 3


def test_spaced_windows_take_evenly_spaced_starts_or_all_of_them() -> None:
    """10 valid starts of 1 step (one 10-step episode): 4 spaced windows start at 0, 3, 6, 9;
    asking for 10 or more gives all ten in order."""
    store = make_store([10])
    assert store.spaced_windows(1, 4).obs[0, :, 1].tolist() == [0.0, 3.0, 6.0, 9.0]
    assert store.spaced_windows(1, 10).obs[0, :, 1].tolist() == [float(i) for i in range(10)]
    assert store.spaced_windows(1, 50).obs[0, :, 1].tolist() == [float(i) for i in range(10)]


def test_episodes_yields_each_episode_whole_and_in_order() -> None:
    """Episodes of 5, 1 and 3 steps come back as three dicts of all fields, of 5, 1 and 3 rows,
    each with its own steps 0..n-1; an empty store yields none."""
    store = make_store([5, 1, 3])
    episodes = list(store.episodes())
    assert [len(e["reward"]) for e in episodes] == [5, 1, 3]
    assert all(set(e) == set(store.data) for e in episodes)
    for i, e in enumerate(episodes):
        assert e["episode"].tolist() == [i] * len(e["reward"])
        assert e["obs"][:, 1].tolist() == list(range(len(e["reward"])))
    assert list(EpisodeStore(3, 2).episodes()) == []


def test_every_field_is_stored_in_its_own_dtype() -> None:
    """Float64 and int inputs: states, actions and rewards float32, flags bool, ids int64."""
    store = EpisodeStore(3, 2)
    store.add_episode(np.zeros((2, 3)), np.zeros((2, 2), int), np.arange(2), np.zeros((2, 3)),
                      np.zeros(2, int), np.zeros(2))  # fmt: skip
    assert {k: v.dtype for k, v in store.data.items()} == {
        "obs": np.float32, "action": np.float32, "reward": np.float32, "next_obs": np.float32,
        "terminated": np.bool_, "truncated": np.bool_, "episode": np.int64,
    }  # fmt: skip


@pytest.mark.parametrize("key", ["obs", "action", "reward", "next_obs"])
def test_a_non_finite_value_in_any_field_is_refused_naming_the_field(key: str) -> None:
    """The message is one line naming the field; the store stays empty."""
    fields = dict(zip(("obs", "action", "reward", "next_obs"), _episode(2)[:4], strict=True))
    fields[key] = fields[key].copy()
    fields[key][1] = np.inf
    store = EpisodeStore(3, 2)
    message = f"^episode has non-finite values in '{key}'; drop it or fix the env$"
    with pytest.raises(DataError, match=message):
        store.add_episode(**fields, terminated=np.zeros(2), truncated=np.zeros(2))
    assert len(store) == 0 and store.next_episode == 0
