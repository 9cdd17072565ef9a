import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small-tensor work is many times slower with threads fighting over a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
