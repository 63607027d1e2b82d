"""Fixtures for the train-llm tests. Every model is built inside the test run (model.tiny) and
trained for real on the CPU. One torch thread: the tiny models gain nothing from more, and a
shared CPU punishes OpenMP spinning.
"""

import os

import pytest
import torch
from llm_helpers import write_recipe

os.environ["OMP_NUM_THREADS"] = "1"  # for the subprocesses too
torch.set_num_threads(1)


@pytest.fixture
def recipe_factory(tmp_path):
    def make(**kwargs):
        return write_recipe(tmp_path, **kwargs)

    return make
