import json
import re

import pytest
import torch

from agents.app.cli import main
from agents.configurator import (
    build_agent,
    build_model,
    build_penalty,
    build_planner,
    build_policy_parts,
    make_config,
)
from agents.configurator.config import Config, flat_fields, from_dict, to_dict, with_overrides
from envs import make_task
from worldmodel.data.store import Stats
from worldmodel.errors import ConfigError


def test_config_to_json_and_back_is_identical() -> None:
    config = make_config({"env": "Reacher-v5", "planner.kind": "cem", "model.hidden": 64})
    assert from_dict(Config, json.loads(json.dumps(to_dict(config)))) == config


def test_a_config_json_of_the_field_names_loads() -> None:
    """config.json keys are the field names (underscores); only the CLI spells them with dashes."""
    saved = {"runs_dir": "x", "train": {"max_steps": 5}, "loop": {"seed_steps": 300}}
    config = from_dict(Config, json.loads(json.dumps(saved)))
    assert (config.runs_dir, config.train.max_steps, config.loop.seed_steps) == ("x", 5, 300)
    assert config.planner == Config().planner


def test_every_field_is_an_option_with_its_docstring_as_help(capsys) -> None:
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    fields = flat_fields(Config)
    assert "planner.horizon" in fields and "model.latent_dropout" in fields
    for key, kind in fields.items():
        option = "--" + key.replace("_", "-")
        # --key TYPE help (default: ...); a bool is --key, --no-key (or --group.no-key) help.
        spelling = r", --\S+" if kind is bool else " " + kind.__name__.upper()
        found = re.search(re.escape(option) + spelling + r" (.*?) \(default: ", text)
        assert found and len(found.group(1).split()) >= 2, f"{option} has no help text"


def test_cli_override_reaches_the_component_it_names() -> None:
    config = make_config({"planner.horizon": 7, "planner.kind": "cem", "model.hidden": 48,
                          "planner.latent_samples": 3}, command="run")  # fmt: skip
    task = make_task(config.env)
    model = build_model(config.model, task.obs_dim, task.act_dim)
    assert model.decoder[0].out_features == 48
    agent = build_agent(config, task, model, torch.device("cpu"))
    assert agent.planner.horizon == 7 and agent.latent_samples == 3
    assert type(build_planner(config.planner, 1, torch.device("cpu"))).__name__ == "CEMPlanner"


@pytest.mark.parametrize("with_value", [True, False])
def test_terminal_value_switch_reaches_the_mpc_policy_agent(with_value: bool) -> None:
    config = make_config({"agent": "mpc+policy", "planner.terminal_value": with_value})
    task = make_task(config.env)
    model = build_model(config.model, task.obs_dim, task.act_dim)
    ones, zeros = torch.ones(task.obs_dim), torch.zeros(task.obs_dim)
    stats = Stats(zeros, ones, zeros, ones)
    penalty = build_penalty(config.policy, model)
    parts = build_policy_parts(config, task, model, stats, model.device, penalty)
    agent = build_agent(config, task, model, torch.device("cpu"), parts)
    assert agent.proposal is not None
    assert (agent.trajectory_cost.value is not None) == with_value


def test_presets_apply_under_the_command_line() -> None:
    assert make_config({"env": "InvertedPendulum-v5"}, command="run").steps == 1_000
    assert make_config({"env": "InvertedPendulum-v5", "steps": 500}, command="run").steps == 500
    assert make_config({"env": "InvertedPendulum-v5"}).steps == Config().steps
    # Pendulum's 30-step plan spans the task; InvertedPendulum's 10-step one needs the value.
    pendulum = {"env": "Pendulum-v1"}
    assert not make_config(pendulum).planner.terminal_value
    assert make_config(pendulum | {"planner.terminal_value": True}).planner.terminal_value
    assert make_config({"env": "InvertedPendulum-v5"}).planner.terminal_value


def test_bad_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        with_overrides(Config(), {"planner.nope": 1})
    with pytest.raises(ConfigError, match="horizon must be positive"):
        with_overrides(Config(), {"planner.horizon": 0})
    with pytest.raises(ConfigError, match="needs a int"):
        with_overrides(Config(), {"planner.horizon": "ten"})
