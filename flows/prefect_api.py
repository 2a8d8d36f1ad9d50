"""Prefect's API as the flows' commands reach it: the server PREFECT_API_URL names, else a temporary
local one each command starts. Either failing is a one-line `ServiceError` naming what to do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from pipeline.core.errors import ServiceError, first_line

STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_SECONDS = 120  # Prefect's own 20 s is too short on a busy 2-core machine
UNREACHABLE = "Failed to reach API at "
NOT_STARTED = "Timed out while attempting to connect to ephemeral Prefect API server"


def allow_slow_startup() -> None:
    """Give a temporary server STARTUP_SECONDS to start, unless the environment says otherwise. Before
    Prefect is imported: it reads its settings then."""
    os.environ.setdefault(STARTUP_TIMEOUT, str(STARTUP_SECONDS))


def unreachable(url: str) -> ServiceError:
    """The error for a Prefect server that did not answer at `url`, its API's address."""
    return ServiceError(
        f"the Prefect server at {url.rstrip('/')} did not answer: start it (make prefect-server), "
        "or unset PREFECT_API_URL to run on a temporary local server"
    )


def check_server(url: str, timeout: float = 10.0) -> None:
    """Raise `unreachable` unless the Prefect server at `url` (its API's address) says it is healthy."""
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError:
        raise unreachable(url) from None


@contextmanager
def reported_api_errors() -> Iterator[None]:
    """Turn Prefect's failure to reach its API into a ServiceError: a server that did not answer, or
    a temporary one that did not start in time."""
    try:
        yield
    except httpx.TransportError as error:  # a client that talks to the server directly (prefect.serve)
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url  # from the environment or the user's Prefect profile
        if url:
            raise unreachable(url) from None
        raise ServiceError(
            f"Prefect's temporary local server stopped answering ({first_line(error)}): try again"
        ) from None
    except RuntimeError as error:
        message = str(error)
        if message.startswith(UNREACHABLE):
            raise unreachable(message.removeprefix(UNREACHABLE).split()[0]) from None
        if message.startswith(NOT_STARTED):
            seconds = os.environ.get(STARTUP_TIMEOUT, STARTUP_SECONDS)
            raise ServiceError(
                f"Prefect's temporary local server did not start within {seconds} s (a busy machine?): try "
                f"again, raise {STARTUP_TIMEOUT}, or start a server (make prefect-server) and set PREFECT_API_URL"
            ) from None
        raise
