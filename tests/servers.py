"""Real servers for tests: started as users start them (make targets), on a free localhost port,
waited for over HTTP, and stopped with everything they spawned."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.synthetic import PROJECT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def make_target(
    target: str, health_url: str, log: Path, timeout: float = 120, env: dict[str, str] | None = None, **variables: str
) -> Iterator[None]:
    """Run `make TARGET VAR=value ...` in the project (with `env` added to the environment) until
    `health_url` answers; stop it after the block."""
    dropped = ("PREFECT_API", "MLFLOW_TRACKING", "MLFLOW_REG")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)} | (env or {})
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
    """Stop a process started with `start_new_session=True` and everything it spawned: SIGTERM, then
    SIGKILL. Returns once none of them runs: make exits at once on SIGTERM, while what it started may
    take seconds to shut down (and hold its port, its files, its locks meanwhile)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_members(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def group_members(group: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass(frozen=True)
class ObjectStore:
    """A running `make object-store`: where it answers, its bucket, and the environment a client needs."""

    endpoint: str
    bucket: str
    keys: dict[str, str]  # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY it was started with

    @property
    def env(self) -> dict[str, str]:
        """The keys and the endpoint, as DVC's and MLflow's boto3 read them."""
        return {**self.keys, "MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.keys["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip

    def keys_in(self, prefix: str) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))


def store_keys() -> dict[str, str]:
    """A fresh key pair, so that nothing passes on a default or on the developer's own keys."""
    return {"AWS_ACCESS_KEY_ID": f"test-{secrets.token_hex(4)}", "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20)}


@contextmanager
def object_store(data_dir: Path, log: Path, keys: dict[str, str] | None = None, bucket: str = "attention-pipeline",
                 timeout: float = 60) -> Iterator[ObjectStore]:  # fmt: skip
    """`make object-store` on a free port with its data in `data_dir` and `keys` (fresh ones by default),
    from the moment it says it is ready (its bucket made) to the end of the block."""
    port = free_port()
    store = ObjectStore(f"http://127.0.0.1:{port}", bucket, keys or store_keys())
    variables = {"OBJECT_STORE_PORT": str(port), "OBJECT_STORE_DIR": str(data_dir), "OBJECT_STORE_BUCKET": bucket}
    with make_target("object-store", f"{store.endpoint}/healthz", log, timeout, env=store.keys, **variables):
        deadline = time.monotonic() + timeout
        while "object store ready" not in log.read_text():  # /healthz answers a moment before the bucket is made
            assert time.monotonic() < deadline, f"object-store not ready in {timeout} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield store


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
