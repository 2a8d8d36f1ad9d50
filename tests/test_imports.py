"""What the light commands import: reading the registry's champion loads no model and no statistics
library, so the daily retraining check and a rollback start in half the time."""

import subprocess
import sys

import pytest

from tests.synthetic import PROJECT

HEAVY = ("torch", "scipy.stats", "sklearn")


@pytest.mark.parametrize("module", ["pipeline.model.aliases", "flows.retraining", "pipeline.rollback"])
def test_reading_the_champion_loads_no_model_and_no_statistics_library(module):
    code = f"import sys, {module}; print(' '.join(name for name in {HEAVY!r} if name in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == []
