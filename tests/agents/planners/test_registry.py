"""`agents.planners.registry`: a registered builder is what `make_planner` calls."""

from __future__ import annotations

import pytest
import torch

from agents.planners import registry
from agents.planners.registry import PlannerSettings, make_planner, register_planner


def test_a_registered_builder_builds_its_kind_and_the_kind_is_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "PLANNERS", dict(registry.PLANNERS))
    built: list[PlannerSettings] = []
    sentinel = object()

    def mine(settings: PlannerSettings) -> object:
        built.append(settings)
        return sentinel

    assert register_planner("mine")(mine) is mine
    settings = PlannerSettings(horizon=4, action_dim=2, device=torch.device("cpu"))
    assert make_planner("mine", settings) is sentinel and built == [settings]
    kinds = "gradient, cem, mppi, hybrid, mine"
    with pytest.raises(ValueError, match=f"^unknown planner kind 'other'; choose one of {kinds}$"):
        make_planner("other", settings)
