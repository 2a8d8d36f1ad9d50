"""Tests of pipeline/core: config, paths, atomic files."""
