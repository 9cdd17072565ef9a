"""EpisodeStore's data file: save and load round trips, and each damaged or foreign file refused."""

import numpy as np
import pytest
from store_cases import _episode, make_store

from worldmodel.data.store import EpisodeStore
from worldmodel.errors import DataError


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


TRIPPED: list[bool] = []


def _trip() -> object:
    TRIPPED.append(True)
    return 0.0


class _Tripwire:
    """Runs `_trip` when unpickled: a data file must never execute code."""

    def __reduce__(self):
        return (_trip, ())


def test_loading_never_unpickles_an_object_array(tmp_path) -> None:
    path = tmp_path / "data.npz"
    make_store([4, 3]).save(path)
    tripwire = np.empty(7, dtype=object)
    tripwire[:] = [_Tripwire() for _ in range(7)]
    _rewrite(path, reward=tripwire)
    TRIPPED.clear()
    with pytest.raises(DataError, match="corrupt or incomplete"):
        EpisodeStore.load(path)
    assert not TRIPPED


def test_a_file_with_a_scalar_reward_names_every_field(tmp_path) -> None:
    path = tmp_path / "data.npz"
    make_store([1]).save(path)
    _rewrite(path, reward=np.zeros((), np.float32))
    with pytest.raises(DataError) as error:
        EpisodeStore.load(path)
    # Without a step count no field can be checked: all seven are named.
    assert "(obs, action, reward, next_obs, terminated, truncated, episode)" in str(error.value)


def test_a_header_with_zero_dims_is_refused_even_if_the_arrays_agree(tmp_path) -> None:
    path = tmp_path / "data.npz"
    make_store([4, 3]).save(path)
    _rewrite(path, _meta=np.array([1, 0, 2, 2], np.int64), obs=np.zeros((7, 0), np.float32),
             next_obs=np.zeros((7, 0), np.float32))  # fmt: skip
    with pytest.raises(DataError, match="inconsistent array shapes or types") as error:
        EpisodeStore.load(path)
    assert str(path) in str(error.value)


def test_a_store_of_one_dim_states_and_actions_round_trips(tmp_path) -> None:
    store = EpisodeStore(1, 1)
    store.add_episode(np.arange(3.0)[:, None], np.ones((3, 1)), np.arange(3.0),
                      np.arange(1.0, 4.0)[:, None], np.zeros(3), np.r_[0, 0, 1])  # fmt: skip
    store.save(tmp_path / "data.npz")
    loaded = EpisodeStore.load(tmp_path / "data.npz", obs_dim=1, act_dim=1)
    np.testing.assert_array_equal(loaded.data["next_obs"][:, 0], [1.0, 2.0, 3.0])
    assert (loaded.obs_dim, loaded.act_dim) == (1, 1)


def test_a_round_trip_keeps_every_array_the_dims_and_the_episode_counter(tmp_path) -> None:
    """Saved after `drop_newer(2)` (episode 2 gone, the next id back to 2): the loaded store has
    equal arrays and dtypes, the dims and the counter, so the next episode added gets id 2."""
    store = make_store([4, 6, 5])
    store.drop_newer(2)
    store.save(tmp_path / "data.npz")
    loaded = EpisodeStore.load(tmp_path / "data.npz")
    assert (loaded.obs_dim, loaded.act_dim, loaded.next_episode) == (3, 2, 2)
    assert loaded.capacity is None and loaded.num_episodes == 2
    assert set(loaded.data) == set(store.data)
    for key, value in store.data.items():
        assert loaded.data[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded.data[key], value)
    loaded.add_episode(*_episode(1))
    assert loaded.data["episode"].tolist()[-1] == 2


def test_a_bad_header_is_named_in_the_error(tmp_path) -> None:
    """A header of 3 numbers: the error quotes it as a bad header."""
    path = tmp_path / "data.npz"
    make_store([4, 3]).save(path)
    _rewrite(path, _meta=np.array([1, 3, 2], np.int64))
    with pytest.raises(
        DataError, match=r"corrupt or incomplete \(bad header array\(\[1, 3, 2\]\)\)"
    ):
        EpisodeStore.load(path)


def test_a_missing_or_non_npz_data_file_is_a_one_line_error_naming_it(tmp_path) -> None:
    """No file: 'does not exist'; a text file: 'not an npz archive' (never handed to np.load)."""
    missing = tmp_path / "data.npz"
    with pytest.raises(DataError) as error:
        EpisodeStore.load(missing)
    assert str(error.value) == (
        f"data file {missing} does not exist; pass a run folder that has one"
    )
    missing.write_text("not a zip")
    with pytest.raises(DataError) as error:
        EpisodeStore.load(missing)
    assert str(error.value) == (
        f"data file {missing} is corrupt or incomplete (not an npz archive); re-collect the data"
    )
