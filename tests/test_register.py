import pytest

from pipeline.register import decide


def test_first_model_above_threshold_becomes_champion():
    decision = decide(0.90, None, min_accuracy=0.85, min_delta=0.0)
    assert decision.promote and "no champion" in decision.reason


def test_better_model_becomes_champion():
    assert decide(0.91, 0.90, min_accuracy=0.85, min_delta=0.0).promote


def test_worse_or_equal_model_stays_challenger():
    assert not decide(0.89, 0.90, min_accuracy=0.85, min_delta=0.0).promote
    assert not decide(0.90, 0.90, min_accuracy=0.85, min_delta=0.0).promote


def test_gain_must_exceed_min_delta():
    assert not decide(0.905, 0.90, min_accuracy=0.0, min_delta=0.01).promote
    assert decide(0.915, 0.90, min_accuracy=0.0, min_delta=0.01).promote


@pytest.mark.parametrize("champion", [None, 0.5])
def test_below_threshold_is_never_promoted(champion):
    decision = decide(0.80, champion, min_accuracy=0.85, min_delta=0.0)
    assert not decision.promote and "below register.min_accuracy" in decision.reason
