"""Tests of pipeline/data: the sources and the manifest."""
