"""Fixtures for the train-llm tests. Every model is built inside the test run (model.tiny) and
trained for real on the CPU (on one thread, as every test: tests/conftest.py).
"""

import pytest
from llm_helpers import write_recipe


@pytest.fixture
def recipe_factory(tmp_path):
    def make(**kwargs):
        return write_recipe(tmp_path, **kwargs)

    return make
