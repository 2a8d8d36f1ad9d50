"""The tree's names: a module's name says which one it is, wherever it is imported or mentioned."""

from collections import defaultdict

from tests.synthetic import PROJECT


def test_no_two_modules_share_a_name():
    found = defaultdict(list)
    for package in ("pipeline", "flows", "bench"):
        for path in (PROJECT / package).rglob("*.py"):
            if path.stem not in {"__init__", "__main__", "conftest"}:
                found[path.stem].append(str(path.relative_to(PROJECT)))
    assert {stem: paths for stem, paths in found.items() if len(paths) > 1} == {}
