"""Fixtures every test shares."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: small-tensor work is many times slower with threads fighting over a
    shared CPU (and a test's figures must not depend on the machine's core count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
