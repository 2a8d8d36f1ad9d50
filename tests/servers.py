"""Real servers for tests: started as users start them (make targets), on a free localhost port,
waited for over HTTP, and stopped with everything they spawned."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.synthetic import PROJECT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def make_target(target: str, health_url: str, log: Path, timeout: float = 120, **variables: str) -> Iterator[None]:
    """Run `make TARGET VAR=value ...` in the project until `health_url` answers; stop it after the block."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING", "MLFLOW_REG"))}
    args = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in variables.items())]
    with log.open("w") as output:
        server = subprocess.Popen(args, cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while True:
                assert server.poll() is None, f"{target} exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"{target} not healthy in {timeout} s:\n{log.read_text()[-3000:]}"
                try:
                    if requests.get(health_url, timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.5)
            yield
        finally:
            stop_group(server)


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process started with `start_new_session=True` and everything it spawned: SIGTERM, then SIGKILL."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def offline_page(allowed: str, **context_options) -> Iterator[tuple[object, list[str]]]:
    """A page in Debian's Chromium on which every request whose URL does not start with `allowed`
    is refused and listed: yields (page, that list), to prove a page asks nothing of the network."""
    from playwright.sync_api import sync_playwright

    web: list[str] = []

    def offline(route):
        if route.request.url.startswith(allowed):
            route.continue_()
        else:
            web.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            context = browser.new_context(**context_options)
            context.route("**/*", offline)
            yield context.new_page(), web
        finally:
            browser.close()
