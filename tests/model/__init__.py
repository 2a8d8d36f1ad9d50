"""Tests of pipeline/model: the network, feature extractors, the weights file."""
