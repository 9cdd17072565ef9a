"""Shared parts of the task tests: the task ids, a fresh task, MuJoCo's log kept out of the repo."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from envs import TASKS, Task

ALL = sorted(TASKS)


@pytest.fixture(autouse=True, scope="module")
def _mujoco_log_outside_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """MuJoCo writes MUJOCO_LOG.TXT into the cwd on any compiler warning (hopper.xml uses the
    deprecated 'settotalmass'); keep it out of the checkout."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("mujoco_log"))
    try:
        yield
    finally:
        os.chdir(cwd)


def fresh_task(env_id: str) -> Task:
    """The task built by its factory now, not make_task's cached one (so that this test, not
    whichever ran first, is the one that runs the factory)."""
    return TASKS[env_id]()
