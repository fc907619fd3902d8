"""Fixtures shared by the pipeline test modules (helpers live in support.py)."""

import pytest


@pytest.fixture
def no_runner(aws):
    """Tests that drive training jobs themselves start from a clean slate."""
    aws.set_training_runner(None)
    yield
    aws.set_training_runner(None)
