"""The HTTP server as one client could abuse it: bodies of any length, huge images, wrong params,
slow requests. A real MLflow pyfunc of a model trained here, served by uvicorn on loopback."""

import base64
import contextlib
import io
import socket
import threading
import time

import mlflow
import pytest
import requests
import uvicorn
from PIL import Image

from pipeline import serve, train
from pipeline.model import pyfunc
from tests.servers import free_port
from tests.synthetic import PROJECT, prepared_project


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The served form of a tiny trained model (`pipeline/model/pyfunc.py`), saved by MLflow: its path."""
    root = tmp_path_factory.mktemp("serve")
    with prepared_project(root, {"train": 30, "test": 10}) as cfg:
        train.run(cfg)
    saved = root / "pyfunc"
    mlflow.pyfunc.save_model(
        saved, python_model=str(PROJECT / "pipeline" / "model" / "pyfunc.py"),
        artifacts={"model_file": str(cfg.paths.model_file)}, code_paths=[str(PROJECT / "pipeline")],
        signature=pyfunc.SIGNATURE,
    )  # fmt: skip
    return str(saved)


class Running:
    """`serve.create_app` (its worker processes started) under uvicorn in a thread, on a free loopback port."""

    def __init__(self, uri: str, limits: serve.Limits):
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        app = serve.create_app(uri, {"name": "test", "version": "1"}, limits)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *_):
        self.server.should_exit = True
        self.thread.join(30)

    def post(self, payload: dict | bytes, **kwargs) -> requests.Response:
        if isinstance(payload, dict):
            return requests.post(f"{self.url}/invocations", json=payload, timeout=60, **kwargs)
        return requests.post(f"{self.url}/invocations", data=payload, timeout=60,
                             headers={"Content-Type": "application/json"}, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def server(saved_model):
    with Running(saved_model, serve.Limits()) as running:
        yield running


def png(side: int, value: int = 128) -> str:
    buffer = io.BytesIO()
    Image.new("L", (side, side), value).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encoded(picture: Image.Image, format: str) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_a_tiff_is_answered_as_its_png_twin_and_a_format_not_served_is_a_400_naming_those_that_are(server):
    picture = Image.new("L", (28, 28), 60)
    picture.paste(200, (8, 8, 20, 20))
    twin = server.post({"inputs": [encoded(picture, "PNG")]})
    tiff = server.post({"inputs": [encoded(picture, "TIFF")]})
    assert twin.status_code == tiff.status_code == 200 and tiff.json() == twin.json()
    gif = server.post({"inputs": [encoded(picture, "GIF")]})
    assert gif.status_code == 400 and "image 0" in gif.json()["error"] and "WebP or TIFF" in gif.json()["error"]


def test_a_body_without_a_declared_length_is_refused_as_soon_as_it_passes_the_limit(server, monkeypatch):
    monkeypatch.setattr(serve, "MAX_BYTES", 1024 * 1024)
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:  # chunked: no length to refuse by
        client.sendall(b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        chunk = b"x" * 65536
        for _ in range(24):  # 1.5 MB of a body that would go on for gigabytes
            client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = client.recv(4096)  # the answer is there before the body ends
        while not reply.endswith(b"}"):
            reply += client.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413") and b"over 1,048,576 bytes" in reply
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200


def test_images_declaring_more_pixels_than_the_budget_are_refused_before_decoding(server):
    side = 4096  # 16.8 Mpx each, a few KB on the wire
    count = pyfunc.REQUEST_PIXELS // (side * side) + 1
    refused = server.post({"inputs": [png(side)] * count})
    answered = server.post({"inputs": [png(side)] * (count - 1)})
    assert refused.status_code == 413 and "pixels in all" in refused.json()["error"]
    assert answered.status_code == 200 and len(answered.json()["predictions"]["class"]) == count - 1


@pytest.mark.parametrize(
    ("params", "key"),
    [({"overlay": "false"}, "overlay"), ({"overlay": 1}, "overlay"), ({"top_k": "3"}, "top_k"),
     ({"top_k": True}, "top_k"), ({"top_k": 0}, "top_k"), ({"colour": 1}, "only top_k")],
)  # fmt: skip
def test_params_of_the_wrong_type_are_a_400_naming_the_param(server, params, key):
    response = server.post({"inputs": [png(16)], "params": params})
    assert response.status_code == 400 and key in response.json()["error"]


def test_a_slow_request_gets_a_503_in_time_holds_its_worker_and_the_server_keeps_answering(saved_model):
    heavy = {"inputs": [png(2048, value) for value in range(16)], "params": {"overlay": True}}  # 2,048² overlays
    with Running(saved_model, serve.Limits(workers=1, queue=0, timeout=0.2)) as server:
        started = time.monotonic()
        late = server.post(heavy)
        waited = time.monotonic() - started
        busy = server.post({"inputs": [png(16)]})  # the one worker is still drawing the overlays
        ping = requests.get(f"{server.url}/ping", timeout=5)
        version = requests.get(f"{server.url}/version", timeout=5)
        time.sleep(0.1)
        while server.post({"inputs": [png(16)]}).status_code == 503:  # free again once the slow one ends
            time.sleep(0.2)
            assert time.monotonic() - started < 60
    assert late.status_code == 503 and "within 0.2 s" in late.json()["error"] and waited < 5
    assert late.headers["Retry-After"] == serve.RETRY_AFTER
    assert busy.status_code == 503 and "busy" in busy.json()["error"] and busy.headers["Retry-After"]
    assert ping.status_code == 200 and version.json()["version"] == "1"


def test_a_worker_killed_under_the_server_is_replaced_and_the_next_request_is_answered(saved_model):
    import psutil

    def workers() -> set[int]:
        found = set()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):  # a child that ended meanwhile
                if "spawn_main" in " ".join(child.cmdline()):
                    found.add(child.pid)
        return found

    before = workers()  # other servers' workers
    with Running(saved_model, serve.Limits(workers=1, queue=2, timeout=60)) as server:
        (worker,) = (psutil.Process(pid) for pid in workers() - before)
        worker.kill()  # what the kernel does to a process over its memory limit
        worker.wait(10)
        died = server.post({"inputs": [png(16)]})
        again = server.post({"inputs": [png(16)]})
    assert died.status_code == 503 and "worker process died" in died.json()["error"]
    assert again.status_code == 200 and len(again.json()["predictions"]["class"]) == 1
