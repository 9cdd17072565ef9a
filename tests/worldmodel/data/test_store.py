import numpy as np
import pytest
import torch

from worldmodel.data.store import EpisodeStore
from worldmodel.errors import DataError


def make_store(lengths: list[int], obs_dim: int = 3, act_dim: int = 2) -> EpisodeStore:
    """Episodes whose obs encode (episode, step) so a window's provenance can be read back."""
    store = EpisodeStore(obs_dim, act_dim)
    for e, n in enumerate(lengths):
        steps = np.arange(n, dtype=np.float32)
        obs = np.stack([np.full(n, e), steps, np.zeros(n)], 1).astype(np.float32)
        next_obs = obs.copy()
        next_obs[:, 1] += 1
        store.add_episode(
            obs, np.ones((n, act_dim)), steps, next_obs, np.r_[np.zeros(n - 1), 1], np.zeros(n)
        )
    return store


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


def test_save_load_round_trip(tmp_path) -> None:
    store = make_store([4, 6])
    store.save(tmp_path / "data.npz")
    loaded = EpisodeStore.load(tmp_path / "data.npz")
    for key, value in store.data.items():
        np.testing.assert_array_equal(loaded.data[key], value)
    assert not list(tmp_path.glob("*.tmp")), "temp file left behind"


def test_corrupt_data_file_is_a_clear_error(tmp_path) -> None:
    store = make_store([4, 6])
    store.save(tmp_path / "data.npz")
    payload = (tmp_path / "data.npz").read_bytes()
    (tmp_path / "data.npz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="corrupt"):
        EpisodeStore.load(tmp_path / "data.npz")


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


def _episode(n: int):
    return (
        np.zeros((n, 3)),
        np.zeros((n, 2)),
        np.zeros(n),
        np.zeros((n, 3)),
        np.zeros(n),
        np.zeros(n),
    )


def test_stats_match_numpy() -> None:
    store = make_store([5, 9])
    stats = store.stats()
    np.testing.assert_allclose(stats.state_mean.numpy(), store.data["obs"].mean(0), rtol=1e-6)
    delta = store.data["next_obs"] - store.data["obs"]
    np.testing.assert_allclose(stats.delta_mean.numpy(), delta.mean(0), rtol=1e-6)
    assert (stats.delta_std > 0).all(), "constant dims must get a positive std floor"


def _rewrite(path, **changes) -> None:
    """The npz at `path` with some arrays replaced (a hand-edited or foreign file)."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def test_a_loaded_store_has_the_stored_dtypes_and_counters(tmp_path) -> None:
    store = make_store([4, 3])
    store.drop_newer(5)
    path = tmp_path / "data.npz"
    store.save(path)
    # Written as float64 / int32 / uint8 by another tool: loaded in the store's own dtypes.
    _rewrite(path, obs=np.load(path)["obs"].astype(np.float64),
             episode=np.load(path)["episode"].astype(np.int32),
             terminated=np.load(path)["terminated"].astype(np.uint8))  # fmt: skip
    loaded = EpisodeStore.load(path)
    dtypes = {k: v.dtype for k, v in loaded.data.items()}
    assert dtypes["obs"] == np.float32 and dtypes["reward"] == np.float32
    assert dtypes["terminated"] == np.bool_ and dtypes["truncated"] == np.bool_
    assert dtypes["episode"] == np.int64
    assert loaded.next_episode == store.next_episode == 2 and len(loaded) == 7
    assert np.load(path)["_meta"].dtype == np.int64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"_meta": np.array([1, 3, 2], np.int64)}, "corrupt"),
        ({"_meta": np.array([1.0, 3, 2, 2])}, "corrupt"),
        ({"_meta": np.array([9, 3, 2, 2], np.int64)}, "format 9"),
        ({"_meta": np.array([1, 0, 2, 2], np.int64)}, "inconsistent"),
        ({"_meta": np.array([1, 4, 2, 2], np.int64)}, "shapes or types (obs, next_obs)"),
        ({"reward": np.zeros(())}, "inconsistent"),
        ({"action": np.zeros((7, 2), "U1")}, "(action)"),
        ({"reward": np.full(7, np.inf, np.float32)}, "NaN or inf in 'reward'"),
    ],
)  # fmt: skip
def test_a_damaged_data_file_is_a_one_line_error_naming_it(tmp_path, change, message) -> None:
    path = tmp_path / "data.npz"
    make_store([4, 3]).save(path)
    _rewrite(path, **change)
    with pytest.raises(DataError) as error:
        EpisodeStore.load(path)
    assert message in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_loading_checks_the_callers_dims_each_on_its_own(tmp_path) -> None:
    path = tmp_path / "data.npz"
    make_store([4, 3]).save(path)
    assert len(EpisodeStore.load(path, obs_dim=3, act_dim=2)) == 7
    for dims in ({"obs_dim": 4}, {"act_dim": 1}, {"obs_dim": 3, "act_dim": 1}):
        with pytest.raises(DataError, match="model expects"):
            EpisodeStore.load(path, **dims)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, obs=np.array([object()], dtype=object))
    with pytest.raises(DataError, match="corrupt"):  # object arrays would need pickle: refused
        EpisodeStore.load(pickled)
