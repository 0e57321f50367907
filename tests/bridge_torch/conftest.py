"""Steering tests: tiny models run faster on one torch thread (and do not fight other tests)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
  before = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(before)
