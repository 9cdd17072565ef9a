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
from agents.configurator.assemble import cost_schedule, fit_schedule
from agents.configurator.config import Config
from agents.configurator.fields import flat_fields, from_dict, to_dict, with_overrides
from agents.configurator.validate import config_from_json
from envs import make_task
from worldmodel.data.store import Stats
from worldmodel.errors import ConfigError
from worldmodel.forward.fit import FitSchedule


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
                          "planner.latent_samples": 3, "model.elbo_weight": "variance",
                          "model.energy_samples": 4, "model.prior_components": 3},
                         command="run")  # fmt: skip
    task = make_task(config.env)
    model = build_model(config.model, task.obs_dim, task.act_dim)
    assert model.decoder[0].out_features == 48 and model.elbo_weight == "variance"
    assert model.energy_samples == 4 and model.prior.means.shape[0] == 3
    agent = build_agent(config, task, model, torch.device("cpu"))
    assert agent.planner.horizon == 7 and agent.latent_samples == 3
    assert type(build_planner(config.planner, 1, torch.device("cpu"))).__name__ == "CEMPlanner"


def test_lr_final_reaches_the_world_model_and_cost_fits() -> None:
    config = make_config({"train.lr_final": 0.25, "train.max_steps": 40})
    assert fit_schedule(config.train).lr_final == 0.25
    assert cost_schedule(config.train).lr_final == 0.25
    assert fit_schedule(config.train, max_steps=10).lr_factor(10) == pytest.approx(0.25)
    assert make_config({}).train.lr_final == FitSchedule().lr_final  # library and CLI agree


def test_ema_decay_reaches_the_world_model_and_cost_fits() -> None:
    config = make_config({"train.ema_decay": 0.5})
    assert fit_schedule(config.train).ema_decay == cost_schedule(config.train).ema_decay == 0.5
    assert make_config({}).train.ema_decay == FitSchedule().ema_decay == 0.99
    with pytest.raises(ConfigError, match=r"ema_decay must be in \[0.0, 0.9999\]"):
        with_overrides(Config(), {"train.ema_decay": 1.0})


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
    with pytest.raises(ConfigError, match="elbo_weight must be one of"):
        with_overrides(Config(), {"model.elbo_weight": "sigma"})
    with pytest.raises(ConfigError, match="energy_samples must be >= 2, got 1"):
        with_overrides(Config(), {"model.energy_samples": 1})
    with pytest.raises(ConfigError, match="prior_components must be zero or positive, got -1"):
        with_overrides(Config(), {"model.prior_components": -1})
    with pytest.raises(ConfigError, match=r"lr_final must be in \[0.0, 1.0\]"):
        with_overrides(Config(), {"train.lr_final": 1.5})
    with pytest.raises(ConfigError, match="horizon must be positive"):
        with_overrides(Config(), {"planner.horizon": 0})
    with pytest.raises(ConfigError, match="needs a int"):
        with_overrides(Config(), {"planner.horizon": "ten"})


def test_the_cost_defaults_to_exact_where_the_task_has_one_else_learned() -> None:
    assert make_config({}).cost == "exact"
    assert make_config({"env": "Swimmer-v5"}).cost == "learned"  # no torch cost for it
    assert make_config({"env": "Pendulum-v1", "cost": "learned"}).cost == "learned"
    with pytest.raises(ConfigError, match="Swimmer-v5 has no exact cost; pass --cost learned"):
        make_config({"env": "Swimmer-v5", "cost": "exact"})
    with pytest.raises(ConfigError, match="cost must be one of"):
        make_config({"cost": "both"})


def test_the_learned_cost_module_learns_what_the_task_does_not_know() -> None:
    """A termination classifier only where the task may end early and has no exact flag; the
    intrinsic cost is then the learned one, with the task's exact termination kept."""
    from agents.configurator.assemble import build_learned_cost, intrinsic_cost
    from agents.configurator.config import CostModelConfig

    sizes = CostModelConfig(hidden=8, layers=1)
    pendulum, pole = make_task("Pendulum-v1"), make_task("InvertedPendulum-v5")
    assert build_learned_cost(sizes, pendulum).termination_net is None  # never ends early
    assert build_learned_cost(sizes, pole).termination_net is None  # its flag is exact
    assert build_learned_cost(sizes, make_task("Swimmer-v5")).termination_net is not None
    learned = build_learned_cost(sizes, pole)
    costs = intrinsic_cost(make_config({"env": pole.id, "cost": "learned"}), pole, learned)
    assert costs.cost is learned and costs.planning_cost is learned
    assert costs.terminated is pole.terminated and costs.learned is learned
    exact = intrinsic_cost(make_config({"env": pole.id}), pole)
    assert exact.planning_cost is pole.planning_cost and exact.learned is None
    with pytest.raises(ConfigError, match="needs the run's learned cost"):
        intrinsic_cost(make_config({"env": pole.id, "cost": "learned"}), pole)


def test_planner_and_policy_use_the_costs_they_are_given() -> None:
    from agents.configurator.assemble import build_learned_cost, intrinsic_cost
    from agents.configurator.config import CostModelConfig

    config = make_config({"env": "Swimmer-v5", "agent": "mpc+policy"})
    task = make_task(config.env)
    learned = build_learned_cost(CostModelConfig(hidden=8, layers=1), task)
    costs = intrinsic_cost(config, task, learned)
    model = build_model(config.model, task.obs_dim, task.act_dim)
    ones, zeros = torch.ones(task.obs_dim), torch.zeros(task.obs_dim)
    penalty = build_penalty(config.policy, model)
    stats = Stats(zeros, ones, zeros, ones)
    parts = build_policy_parts(config, task, model, stats, model.device, penalty, costs)
    agent = build_agent(config, task, model, torch.device("cpu"), parts, penalty, costs)
    assert agent.trajectory_cost.cost is learned
    assert agent.trajectory_cost.terminated == learned.terminated  # Swimmer's flag is not known
    assert parts.policy_learner.trajectory_cost.cost is learned
    with pytest.raises(ConfigError, match="needs the run's learned cost"):
        build_agent(config, task, model, torch.device("cpu"))  # no costs: none to plan with


def test_the_learned_cost_starts_from_a_forked_rng() -> None:
    """Building it draws nothing from torch's global generator (the world model's dropout
    masks come from there), and the same seed gives the same weights."""
    from agents.configurator.assemble import new_learned_cost
    from agents.configurator.config import CostModelConfig
    from worldmodel.cost.learned import CostStats

    task = make_task("Pendulum-v1")
    ones, zeros = torch.ones(3), torch.zeros(3)
    stats, costs = Stats(zeros, ones, zeros, ones), CostStats(0.0, 1.0, 0.0)
    torch.manual_seed(5)
    first = new_learned_cost(CostModelConfig(), task, stats, costs, torch.device("cpu"), seed=1)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)
    again = new_learned_cost(CostModelConfig(), task, stats, costs, torch.device("cpu"), seed=1)
    for key, tensor in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key


def test_a_saved_config_from_before_lr_final_or_ema_decay_resumes_as_it_ran() -> None:
    """Without the key a run predates it: fits then kept a constant rate and their own weights."""
    saved = to_dict(make_config({"train.lr_final": 0.02}))
    assert saved["train"]["ema_decay"] == 0.99  # today's default
    del saved["train"]["lr_final"], saved["train"]["ema_decay"]
    train = config_from_json(saved).train
    assert (train.lr_final, train.ema_decay) == (1.0, 0.0)
    saved["train"] |= {"lr_final": 0.3, "ema_decay": 0.9}
    train = config_from_json(saved).train
    assert (train.lr_final, train.ema_decay) == (0.3, 0.9)


def test_a_saved_config_from_before_the_mixture_prior_resumes_with_the_standard_one() -> None:
    """Its checkpoint has no mixture parameters: z's prior was N(0, I)."""
    saved = to_dict(make_config({}))
    assert saved["model"]["prior_components"] == 4  # today's default
    del saved["model"]["prior_components"]
    config = config_from_json(saved)
    assert config.model.prior_components == 0
    assert build_model(config.model, 3, 1).prior is None


def test_wm_run_renormalizes_on_locomotion_and_tasks_without_presets_only() -> None:
    """The hand-coded tasks keep the normalisation of their seed steps (measured so); a task
    with no presets, and locomotion, follow the data in `wm run`; the user's option wins."""
    assert not make_config({"env": "Pendulum-v1"}, command="run").loop.renormalize
    assert make_config({"env": "Swimmer-v5"}, command="run").loop.renormalize
    hopper = make_config({"env": "Hopper-v5"}, command="run")
    assert hopper.loop.renormalize and hopper.agent == "policy"
    assert (hopper.loop.update_every, hopper.loop.model_updates, hopper.loop.policy_updates) == (
        10,
        2,
        1,
    )
    assert not make_config({"env": "Swimmer-v5"}).loop.renormalize  # train has no loop
    off = make_config({"env": "Swimmer-v5", "loop.renormalize": False}, command="run")
    assert not off.loop.renormalize
    assert make_config({"env": "Hopper-v5", "agent": "mpc"}, command="run").agent == "mpc"
