"""The object store (`make object-store`: SeaweedFS's S3 endpoint on localhost) as the project uses it:
a DVC remote that round-trips data, MLflow's artifact store behind `make mlflow-server`, keys that
are checked, and data that outlives a restart. No mocks: every byte goes through the real server."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from pipeline.core.errors import PipelineError
from pipeline.object_store import LOCAL_CREDENTIALS, server_credentials
from tests.dvc_repo import command_env, dvc, run
from tests.servers import free_port, make_target, object_store, store_keys
from tests.synthetic import PROJECT


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("object-store")
    with object_store(folder / "data", folder / "store.log") as running:
        yield running


def dvc_repo(root, store, keys: dict[str, str]):
    """A git + DVC repository with one `dvc add`-ed file and the store as its default remote, the keys
    in `.dvc/config.local` (which git ignores), as docs/object-store.md says."""
    root.mkdir()
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    (root / "data").mkdir()
    (root / "data" / "blob.bin").write_bytes(os.urandom(50_000))
    dvc(root, "add", "-q", "data/blob.bin")
    dvc(root, "remote", "add", "-d", "store", f"s3://{store.bucket}/dvc")
    dvc(root, "remote", "modify", "store", "endpointurl", store.endpoint)
    dvc(root, "remote", "modify", "--local", "store", "access_key_id", keys["AWS_ACCESS_KEY_ID"])
    dvc(root, "remote", "modify", "--local", "store", "secret_access_key", keys["AWS_SECRET_ACCESS_KEY"])
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "data")
    return root


def test_dvc_push_then_pull_round_trips_a_file_through_the_bucket(store, tmp_path):
    repo = dvc_repo(tmp_path / "repo", store, store.keys)
    blob = (repo / "data" / "blob.bin").read_bytes()
    md5 = hashlib.md5(blob).hexdigest()
    assert "1 file pushed" in dvc(repo, "push")
    assert store.keys_in("dvc/") == [f"dvc/files/md5/{md5[:2]}/{md5[2:]}"]  # in the bucket, not a folder
    committed = run(repo, "git", "show", "HEAD:.dvc/config").stdout
    assert "endpointurl" in committed and store.keys["AWS_SECRET_ACCESS_KEY"] not in committed

    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "data" / "blob.bin").unlink()
    dvc(repo, "pull")
    assert (repo / "data" / "blob.bin").read_bytes() == blob


def test_mlflow_server_keeps_run_artifacts_in_the_bucket(store, tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server_store = tmp_path / "server-store"
    with make_target("mlflow-server", f"{uri}/health", tmp_path / "server.log", env=store.env,
                     MLFLOW_SERVER_PORT=str(port), MLFLOW_SERVER_STORE=str(server_store),
                     MLFLOW_ARTIFACTS=f"s3://{store.bucket}/mlflow"):  # fmt: skip
        client = MlflowClient(tracking_uri=uri)  # over HTTP only: the client holds no S3 keys
        experiment = client.create_experiment("object-store")
        run_id = client.create_run(experiment).info.run_id
        note = tmp_path / "note.txt"
        note.write_text("an artifact in the object store")
        client.log_artifact(run_id, str(note))
        client.set_terminated(run_id)
        fetched = client.download_artifacts(run_id, "note.txt", str(tmp_path))
        assert open(fetched).read() == "an artifact in the object store"
    assert store.keys_in("mlflow/") == [f"mlflow/{experiment}/{run_id}/artifacts/note.txt"]
    assert not (server_store / "artifacts").exists()


def test_wrong_keys_fail_in_one_line(store, tmp_path):
    wrong_secret = {**store.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    key = store.keys["AWS_ACCESS_KEY_ID"]
    check = [sys.executable, "-m", "pipeline.object_store", "check", f"s3://{store.bucket}/mlflow"]

    done = subprocess.run(check, env=command_env() | wrong_secret, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"error: the object store at {store.endpoint} refused the secret key of '{key}': "
        "use the AWS_SECRET_ACCESS_KEY it was started with"
    ]
    unknown = command_env() | store.env | {"AWS_ACCESS_KEY_ID": "nobody"}
    done = subprocess.run(check, env=unknown, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "does not know the access key 'nobody'" in done.stderr

    # `make mlflow-server` with S3 artifacts stops at that line, before the server starts.
    server_store = tmp_path / "server-store"
    done = subprocess.run(
        ["make", "--no-print-directory", "mlflow-server", f"MLFLOW_SERVER_PORT={free_port()}",
         f"MLFLOW_SERVER_STORE={server_store}", f"MLFLOW_ARTIFACTS=s3://{store.bucket}/mlflow"],
        cwd=PROJECT, env=command_env() | wrong_secret, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "error: the object store at" in done.stderr and "refused the secret key" in done.stderr
    assert not (server_store / "mlflow.db").exists()

    # DVC says it in its own words: one ERROR line and a non-zero exit. Which words depends on the request
    # that failed first: a HEAD answer has no body, so it is only "Forbidden (403)".
    repo = dvc_repo(tmp_path / "repo", store, {**store.keys, "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    done = subprocess.run([sys.executable, "-m", "dvc", "push"], cwd=repo, env=command_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR")]
    assert done.returncode != 0 and len(errors) == 1, done.stdout + done.stderr
    assert re.search(r"SignatureDoesNotMatch|\(403\)", errors[0]), errors
    md5 = hashlib.md5((repo / "data" / "blob.bin").read_bytes()).hexdigest()
    assert store.keys_in(f"dvc/files/md5/{md5[:2]}/{md5[2:]}") == []


def test_a_second_start_serves_the_same_objects_within_seconds(tmp_path):
    keys = store_keys()
    with object_store(tmp_path / "data", tmp_path / "first.log", keys) as first:
        first.client().put_object(Bucket=first.bucket, Key="kept/note.txt", Body=b"still here")
    with object_store(tmp_path / "data", tmp_path / "second.log", keys) as second:
        assert second.client().get_object(Bucket=second.bucket, Key="kept/note.txt")["Body"].read() == b"still here"
    first_log, second_log = (tmp_path / "first.log").read_text(), (tmp_path / "second.log").read_text()
    assert "(created)" in first_log and "(kept)" in second_log
    for log in (first_log, second_log):
        seconds = float(re.search(r"object store ready in ([\d.]+) s", log).group(1))
        assert seconds < 10, log
    for store in (first, second):  # SeaweedFS leaves its Unix sockets in /tmp; the store removes them
        assert not Path(f"/tmp/seaweedfs-s3-{store.endpoint.rsplit(':', 1)[1]}.sock").exists()


def test_every_part_of_the_store_listens_on_loopback_only(store):
    port = store.endpoint.rsplit(":", 1)[1]
    (weed,) = [proc.pid for proc in psutil.process_iter(["cmdline"])  # skips a process that ended meanwhile
               if f"-s3.port={port}" in (proc.info["cmdline"] or [])]  # fmt: skip
    sockets = set()
    for fd in Path(f"/proc/{weed}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                sockets.add(target[8:-1])
    listening = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
                listening.add(fields[1])
    assert len(listening) >= 5, listening  # S3, master, volume, filer and their gRPC ports
    assert {address.split(":")[0] for address in listening} == {"0100007F"}, listening  # 127.0.0.1


def test_the_store_takes_both_keys_from_the_environment_or_neither():
    both = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    given = server_credentials(both)
    assert (given.access_key, given.secret_key) == ("k", "s")
    neither = server_credentials({})
    assert (neither.access_key, neither.secret_key) == LOCAL_CREDENTIALS and "local-only" in neither.source
    with pytest.raises(PipelineError, match="AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"):
        server_credentials({"AWS_SECRET_ACCESS_KEY": "s"})
