import pytest

from pipeline.core.errors import first_line


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad header\nTraceback (most recent call last): ..."), "bad header"),
        (OSError("\n  cannot identify image file\nmore"), "cannot identify image file"),
        (KeyError(), "KeyError"),  # no message: its type
        (RuntimeError("x" * 500), "x" * 200),
    ],
)
def test_an_error_is_reported_by_its_first_line(error, expected):
    assert first_line(error) == expected


def test_the_limit_is_the_callers():
    assert first_line(RuntimeError("y" * 500), 300) == "y" * 300
