"""Tests of flows/: the Prefect flows, their parameters and a Prefect server."""
