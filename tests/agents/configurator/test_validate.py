"""The checks of a whole config before anything is written: types from JSON (generic over every
field), ranges, seeds, threads, rules between fields, devices, and the memory estimate."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Literal

import pytest
import torch

from agents.configurator import make_config
from agents.configurator.capacity import check_memory, host_memory, memory_needs
from agents.configurator.config import Config
from agents.configurator.fields import flat_fields, to_dict
from agents.configurator.presets import PRESETS
from agents.configurator.validate import (
    INT_MAX,
    SEED_MAX,
    check_field_ranges,
    check_rules,
    check_seed,
    check_threads,
    config_from_json,
    typed_values,
    usable_device,
)
from envs import make_task
from worldmodel.errors import ConfigError

WRONG = {bool: ["yes", 1, None], int: ["7", 7.0, True, None, [7]], float: ["0.1", True, None],
         str: [1, None, ["x"], {"a": 1}]}  # fmt: skip


def _set(tree: dict, key: str, value: object) -> dict:
    *groups, leaf = key.split(".")
    node = tree
    for group in groups:
        node = node[group]
    node[leaf] = value
    return tree


@pytest.mark.parametrize("key", sorted(flat_fields(Config)))
def test_every_field_of_a_json_config_refuses_a_value_of_another_type(key: str) -> None:
    """Generic over the dataclasses: a field added later is covered without a new test."""
    kind = flat_fields(Config)[key]
    for value in WRONG[kind]:
        with pytest.raises(ConfigError, match=rf"^{key} must be .*, got "):
            config_from_json(_set(to_dict(Config()), key, value))


def test_a_json_config_of_the_right_types_loads_and_ints_become_floats() -> None:
    saved = json.loads(json.dumps(to_dict(Config())))
    assert config_from_json(saved) == Config()
    config = config_from_json({"train": {"lr": 1}, "seed": 3})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float) and config.seed == 3


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ([1, 2], "the config must be a JSON object, got [1, 2]"),
        ("abc", "the config must be a JSON object, got 'abc'"),
        (None, "the config must be a JSON object, got null"),
        ({"model": 5}, "model must be a JSON object, got 5"),
        ({"train": {"nope": 1}}, "unknown config key(s) ['train.nope']"),
        ({"train": {"lr": float("nan")}}, "train.lr must be a finite number, got nan"),
        ({"train": {"lr": float("inf")}}, "train.lr must be a finite number, got inf"),
    ],
)
def test_a_json_config_that_is_no_config_is_one_line(values: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_json(values)
    assert words in str(info.value) and "\n" not in str(info.value)


@dataclasses.dataclass(frozen=True)
class Other:
    """Hints the config does not use yet (get_type_hints resolves them at module level)."""

    mode: Literal["a", "b"] = "a"
    limit: int | None = None


def test_literal_and_optional_hints_are_checked_too() -> None:
    assert typed_values(Other, {"mode": "b", "limit": None}) == {"mode": "b", "limit": None}
    assert typed_values(Other, {"limit": 3}) == {"limit": 3}
    with pytest.raises(ConfigError, match="mode must be one of"):
        typed_values(Other, {"mode": "c"})
    with pytest.raises(ConfigError, match="limit must be"):
        typed_values(Other, {"limit": "3"})


def test_integers_beyond_64_bits_and_infinite_floats_are_refused_in_any_field() -> None:
    config = dataclasses.replace(
        Config(), train=dataclasses.replace(Config().train, max_steps=2**63)
    )
    with pytest.raises(ConfigError, match="train.max_steps 9223372036854775808 does not fit"):
        check_field_ranges(config)
    check_field_ranges(dataclasses.replace(config, train=Config().train))  # the defaults pass
    big = dataclasses.replace(Config().train, max_steps=INT_MAX)
    check_field_ranges(dataclasses.replace(Config(), train=big))


def test_seed_range_is_what_numpy_and_gymnasium_take() -> None:
    check_seed(0)
    check_seed(SEED_MAX)
    for seed in (-1, SEED_MAX + 1, 2**64):
        with pytest.raises(ConfigError, match=rf"seed {seed} is out of range; pass a --seed in"):
            check_seed(seed)


def test_threads_at_most_the_cores() -> None:
    cores = os.cpu_count() or 1
    check_threads(0)
    check_threads(cores)
    with pytest.raises(ConfigError, match=f"more than the {cores} CPU cores"):
        check_threads(cores + 1)


def test_cem_elites_more_than_the_population_are_refused_for_cem_and_hybrid_only() -> None:
    for kind in ("cem", "hybrid"):
        with pytest.raises(ConfigError, match="planner.elites 50 is more than planner.population"):
            make_config({"planner.kind": kind, "planner.population": 10, "planner.elites": 50})
    # Gradient and MPPI planners draw no elites: the same numbers are no error for them.
    for kind in ("gradient", "mppi"):
        make_config({"planner.kind": kind, "planner.population": 10, "planner.elites": 50})
    make_config({"planner.kind": "cem", "planner.population": 50, "planner.elites": 50})


def test_seed_steps_over_the_budget_is_a_rule_of_run_only() -> None:
    config = dataclasses.replace(Config(), steps=100)
    check_rules(config, "train")
    with pytest.raises(ConfigError, match="loop.seed_steps 200 exceeds the budget 100"):
        check_rules(config, "run")


@pytest.mark.parametrize("name", ["meta", "mps", "xpu", "gpu7", "cuda:7", "cuda", ""])
def test_devices_torch_names_but_cannot_compute_on_are_refused(name: str) -> None:
    if name.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    if name in ("cuda", "") and torch.cuda.is_available():
        pytest.skip("cuda works here")
    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("mps works here")
    with pytest.raises(ConfigError) as info:
        usable_device(name)
    assert f"'{name}'" in str(info.value) and (
        "--device" in str(info.value) or "use auto" in str(info.value)
    )
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_cpu_and_auto_are_usable() -> None:
    assert usable_device("cpu") == torch.device("cpu")
    assert usable_device("auto").type in ("cpu", "cuda")


@pytest.mark.parametrize("env", sorted(PRESETS))
@pytest.mark.parametrize("command", ["train", "run"])
def test_every_tasks_defaults_fit_in_memory(env: str, command: str) -> None:
    """The estimate must never refuse what runs: the presets of every task pass it."""
    config = make_config({"env": env}, command=command)
    needs = memory_needs(config, make_task(env), command)
    assert 0 < sum(n.bytes for n in needs) < 2e9  # well under any machine's memory


def test_a_batch_of_ten_million_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError) as info:
        make_config({"train.batch_size": 10_000_000})
    message = str(info.value)
    assert message.startswith("train.batch_size 10000000 needs about ")
    assert "more than the" in message and message.endswith("lower --train.batch-size")


def test_the_estimate_grows_with_the_options_it_names() -> None:
    task = make_task("Pendulum-v1")

    def need(config: Config, what: str, command: str = "run") -> int:
        (found,) = [n.bytes for n in memory_needs(config, task, command) if n.what == what]
        return found

    base = make_config({"agent": "mpc+policy", "planner.kind": "cem"}, command="run")
    for key, what in (
        ("train.batch_size", "training"),
        ("planner.population", "planning"),
        ("policy.batch_size", "the policy's updates"),
    ):
        group, name = key.split(".")
        section = getattr(base, group)
        doubled = dataclasses.replace(
            base, **{group: dataclasses.replace(section, **{name: 2 * getattr(section, name)})}
        )
        assert need(doubled, what) == 2 * need(base, what), key
    assert need(dataclasses.replace(base, steps=2 * base.steps), "the data", "train") == 2 * need(
        base, "the data", "train"
    )


def test_the_option_named_is_the_one_raised_most_over_its_default() -> None:
    task = make_task("Pendulum-v1")
    config = make_config({"model.hidden": 2048})
    huge = dataclasses.replace(config, train=dataclasses.replace(config.train, horizon=10**7))
    with pytest.raises(ConfigError, match="lower --train.horizon$"):
        check_memory(huge, task, "train", torch.device("cpu"))
    assert host_memory() > 2**27
