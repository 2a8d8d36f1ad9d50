"""Serve a registered model over HTTP: image files in; classes, the top k and attention maps out.

    python -m pipeline.serve [--model models:/NAME@champion] [--host 127.0.0.1] [--port 5001]
                             [--workers 2] [--queue 8] [--timeout 30]                    (make serve)

    POST /invocations  {"inputs": ["<base64 image file>", ...], "params": {"top_k": 5, "overlay": true}}
                       or {"inputs": <uint8 images N×C×H×W>}: the body `mlflow models serve` takes
    GET  /ping         200 once the model is loaded
    GET  /version      which model answers: name, version, aliases, test accuracy, classes, input

The model is the registry's MLflow model (`pipeline/model/pyfunc.py`: the same decoding as
training), resolved once to a version (`/version` names the version that answers) and loaded in
each of `--workers` worker processes before the server opens. No one client can take the server:
- the body is counted as it arrives (declared length or not) and refused past `MAX_BYTES`;
- the images' declared pixels are summed from their headers before any is decoded and refused
  past the per-request budget (`pyfunc.REQUEST_PIXELS`);
- parsing, decoding and the model run in the worker processes, so the server's own process only
  moves bytes: `/ping` and `/version` answer at once, whatever the load (threads would share the
  GIL with the JSON and image work); `--queue` more requests may wait; beyond that, 503 with
  `Retry-After`; a request not answered within `--timeout` seconds gets 503 too (its worker
  finishes it, and holds its place meanwhile).
Every answered image is appended to the prediction log (`monitoring.log`: class, probability,
novelty, unknown, a compact embedding, the input's brightness, contrast and sharpness, and its hash;
`pipeline/monitoring/prediction_log.py`), buffered in the server's process and written every few
seconds and at shutdown.
A request it cannot answer gets a 4xx and `{"error": "<one line>"}`: 400 (not JSON, no inputs, not
an image, a decompression bomb, a wrong shape, params of the wrong type), 413 (a body over
`MAX_BYTES`, more than `MAX_IMAGES` images, more pixels than the budget), 415 (not JSON).
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, first_line, run_cli
from pipeline.core.ports import port_free
from pipeline.data.images import WIDE_BITS
from pipeline.monitoring.image_quality import QUALITY

FLUSH_SECONDS, FLUSH_RECORDS = 5.0, 2048
MAX_BYTES = 32 * 1024 * 1024
MAX_IMAGES = 256
RETRY_AFTER = "1"  # seconds, for a 503
LOGGED = {"embedding": True, "quality": True}  # what a logging server asks the model for (pyfunc's params)


@dataclass
class Limits:
    """How many requests run the model at once, how many more may wait, and for how long."""

    workers: int = 2
    queue: int = 8
    timeout: float = 30.0


_model = None  # in a worker process: the loaded pyfunc model


def _start_worker(uri: str, tracking_uri: str, registry_uri: str, threads: int) -> None:
    """A worker process's start: its share of the cores for PyTorch (workers that each spread over
    every core fight each other and the server's own process), then load the model once."""
    global _model
    import mlflow
    import torch

    torch.set_num_threads(threads)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    _model = mlflow.pyfunc.load_model(uri)


def _model_info() -> dict:
    return model_about(_model)


def _answer_in_worker(body: bytes, log: bool, log_images: bool) -> tuple[int, bytes, list[dict] | None]:
    response, records = answer(_model, body, log, log_images)
    return response.status_code, response.body, records


@dataclass
class Gate:
    """The requests admitted (running or waiting) and the worker processes that answer them."""

    limits: Limits
    uri: str
    admitted: int = 0
    restarting: bool = False
    pool: ProcessPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        import mlflow

        self.stores = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())

    def start(self) -> dict:
        """Start every worker (each loads the model); what the model takes, from one of them."""
        self.pool = ProcessPoolExecutor(
            self.limits.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(self.uri, *self.stores, max(1, (os.cpu_count() or 1) // self.limits.workers)),
        )  # fmt: skip
        started = [self.pool.submit(_model_info) for _ in range(self.limits.workers)]
        try:
            return [future.result() for future in started][0]
        except Exception as error:  # the worker's own failure to load, in whatever type MLflow raised it
            self.pool.shutdown(wait=False, cancel_futures=True)
            reason = first_line(error)
            raise PipelineError(f"{self.uri}: the model does not load in a worker process ({reason})") from None

    def restart(self) -> None:
        """New workers after one died (killed for memory, say): the broken pool cannot run anything."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.start()

    @property
    def full(self) -> bool:
        return self.admitted >= self.limits.workers + self.limits.queue


class TooLarge(Exception):
    """A body past MAX_BYTES."""


def describe(reference: str) -> dict:
    """Name, version, alias, test accuracy and run of a `models:/NAME@ALIAS` or `models:/NAME/VERSION`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, _, rest = reference.removeprefix("models:/").partition("/")
    name, _, alias = name.partition("@")
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, rest)
    except MlflowException as error:
        raise PipelineError(f"{reference}: {missing(client, name, alias, error)}") from None
    accuracy = version.tags.get("test_accuracy")
    return {
        "model": reference, "name": name, "version": str(version.version), "aliases": list(version.aliases),
        "test_accuracy": float(accuracy) if accuracy else None, "run_id": version.run_id,
        "data_version": version.tags.get("data_version"),
    }  # fmt: skip


def missing(client, name: str, alias: str, error: Exception) -> str:
    """Why a reference is not in the registry, and what to name instead when the model has versions."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        versions = []
    if not alias or not versions:
        return f"not in the registry ({first_line(error)}); train and register a model first"
    newest = max(versions, key=lambda v: int(v.version))
    decision, why = newest.tags.get("decision", "registered"), newest.tags.get("decision_reason", "no reason recorded")
    return (
        f"no version is '{alias}'; the newest, version {newest.version}, was {decision} ({why}); "
        f"name it instead: models:/{name}/{newest.version}"
    )


def resolve(cfg: Config, reference: str) -> dict:
    """Connect to the project's MLflow store and describe `reference` (an alias resolved to its version)."""
    from pipeline.core.tracking import connect

    if not reference.startswith("models:/"):
        raise PipelineError(f"--model {reference}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    connect(cfg)
    return describe(reference)


def model_about(model) -> dict:
    """What a loaded pyfunc model takes (classes, input) and how it decides."""
    info = model.unwrap_python_model().info
    detector = getattr(info, "detector", None)  # older registered versions bring older code
    return {"classes": info.classes, "image_size": info.image_size, "channels": info.channels,
            "bit_depth": getattr(info, "bit_depth", WIDE_BITS),  # older registered versions bring older code
            "decision": info.rule.describe(), "unknown": detector.describe() if detector else None}  # fmt: skip


def load(cfg: Config, reference: str):
    """The registered MLflow model (pyfunc), loaded in this process, and its description; an alias
    is resolved once and that version is loaded, so the description names the model that answers."""
    import mlflow

    about = resolve(cfg, reference)
    model = mlflow.pyfunc.load_model(f"models:/{about['name']}/{about['version']}")
    return model, {**about, **model_about(model)}


def refuse(status: int, reason: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers or None)


async def read_body(request: Request) -> bytes:
    """The body, counted as it arrives: TooLarge as soon as it passes MAX_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BYTES:
        raise TooLarge(f"body of {int(declared):,} bytes, over {MAX_BYTES:,}: send fewer or smaller images")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BYTES:
            raise TooLarge(f"body over {MAX_BYTES:,} bytes: send fewer or smaller images")
    return bytes(body)


def parse(body: bytes) -> tuple[object, dict] | JSONResponse:
    """The request's inputs and params, or the 4xx that refuses it."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return refuse(400, f'body: not JSON ({type(error).__name__}); send {{"inputs": [...]}}')
    inputs = payload.get("inputs", payload.get("instances")) if isinstance(payload, dict) else None
    if inputs is None:
        return refuse(400, 'body: no "inputs"; send {"inputs": ["<base64 image file>", ...]}')
    count = len(inputs) if isinstance(inputs, list) else 1
    if count > MAX_IMAGES:
        return refuse(413, f"{count} images in one request, over {MAX_IMAGES}: split the batch")
    params = payload.get("params") or {}
    if not isinstance(params, dict) or set(params) - {"top_k", "overlay"}:
        return refuse(400, "params: only top_k (integer) and overlay (true/false)")
    top_k, overlay = params.get("top_k", 5), params.get("overlay", False)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        return refuse(400, f"params.top_k: {json.dumps(top_k)} is not a positive integer")
    if not isinstance(overlay, bool):
        return refuse(400, f"params.overlay: {json.dumps(overlay)} is not true or false")
    return inputs, {"top_k": top_k, "overlay": overlay}


def answer(model, body: bytes, log: bool = False, log_images: bool = False) -> tuple[Response, list[dict] | None]:
    """Parse, check and answer one request (in a worker process: decoding and the model are slow);
    with `log`, also the prediction log's records of its images (`log_images`: with the files sent)."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    from pipeline.model import pyfunc

    parsed = parse(body)
    if isinstance(parsed, Response):
        return parsed, None
    inputs, params = parsed
    try:
        if isinstance(inputs, list) and inputs and all(isinstance(item, str) for item in inputs):
            # the budget is this server's, whatever version of the model's code answers
            inputs = [pyfunc.image_bytes(item, index) for index, item in enumerate(inputs)]
            pyfunc.check_pixels(inputs)
        result = model.predict(inputs, params={**params, **for_the_log(model)} if log else params)
    except ValueError as error:  # the model's BadInput (its own copy of the class: the model brings its code)
        status = getattr(error, "status", 400)  # 413: over the request's pixel budget
        return refuse(status, first_line(error, 300)), None
    except TypeError as error:
        return refuse(400, f"inputs: {first_line(error)}"), None
    records = log_records(model, inputs, result, log_images) if log else None
    for key in ("embedding", *QUALITY):  # for the log, not the caller
        result.pop(key, None)
    text = StringIO()
    predictions_to_json(result, text)
    return Response(text.getvalue(), media_type="application/json"), records


def for_the_log(model) -> dict:
    """The params that make the model answer what the prediction log keeps (`LOGGED`), those its
    signature declares: a version registered before one of them answers without it (the log's
    column stays empty), where MLflow would warn of the unknown param on every request."""
    schema = model.metadata.get_params_schema()
    declared = {param.name for param in schema.params} if schema else set()
    return {name: value for name, value in LOGGED.items() if name in declared}


def log_records(model, inputs: object, result: dict, keep_files: bool) -> list[dict]:
    """The prediction log's records of one answered request (time, model and version added by the server)."""
    import numpy as np

    from pipeline.monitoring.prediction_log import answer_records, input_hash

    if isinstance(inputs, list) and all(isinstance(item, bytes) for item in inputs):
        files = inputs
    else:
        array = np.asarray(inputs)
        files = [np.ascontiguousarray(image).tobytes() for image in (array if array.ndim == 4 else array[:, None])]
    records = answer_records(result, model.unwrap_python_model().info.classes, [input_hash(f) for f in files])
    for record, data in zip(records, files, strict=True):
        record["image"] = data if keep_files else None
    return records


@dataclass
class LogBuffer:
    """Prediction log records waiting in the server's process; written every FLUSH_SECONDS, past
    FLUSH_RECORDS, and at shutdown."""

    folder: Path
    model: str
    version: str
    records: list[dict] = field(default_factory=list)

    async def flush(self) -> None:
        """Write what is waiting, in a thread (the list is swapped here, on the event loop)."""
        from pipeline.monitoring.prediction_log import write

        waiting, self.records = self.records, []
        await asyncio.to_thread(write, self.folder, waiting, "serve", self.model, self.version)


def create_app(
    uri: str, about: dict, limits: Limits | None = None, log_folder: Path | None = None, log_images: bool = False
) -> FastAPI:
    """The FastAPI app serving the MLflow model at `uri` (`models:/NAME/VERSION` or a path) from
    worker processes, started here; `about` is what `/version` says, with the model's classes and
    input. With `log_folder`, every answered image goes to the prediction log there."""
    gate = Gate(limits or Limits(), uri)
    about = {**about, **gate.start()}
    buffer = LogBuffer(log_folder, about["name"], about["version"]) if log_folder else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        async def flush_every() -> None:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                await buffer.flush()

        writer = asyncio.create_task(flush_every()) if buffer else None
        try:
            yield
        finally:
            if writer:
                writer.cancel()
                await buffer.flush()
            gate.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="attention-classifier", docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.get("/ping")
    def ping() -> Response:
        return Response("\n", media_type="text/plain")

    @app.get("/version")
    def version() -> dict:
        return about

    async def replace_workers() -> JSONResponse:
        """After a worker died (killed for memory, say): new workers, once; the request may retry."""
        if not gate.restarting:
            gate.restarting = True
            try:
                await asyncio.to_thread(gate.restart)
            finally:
                gate.restarting = False
        return refuse(503, "a worker process died answering a request; retry", **{"Retry-After": RETRY_AFTER})

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return refuse(415, 'send JSON: Content-Type: application/json with {"inputs": [...]}')
        if gate.full:
            busy = f"busy: {gate.limits.workers} requests running and {gate.limits.queue} waiting; retry shortly"
            return refuse(503, busy, **{"Retry-After": RETRY_AFTER})
        gate.admitted += 1
        try:
            body = await read_body(request)
        except (TooLarge, ClientDisconnect) as error:
            gate.admitted -= 1
            return refuse(413 if isinstance(error, TooLarge) else 400, str(error) or "the client went away")
        except BaseException:
            gate.admitted -= 1
            raise
        try:
            work = asyncio.get_running_loop().run_in_executor(
                gate.pool, _answer_in_worker, body, buffer is not None, log_images
            )
        except BrokenProcessPool:
            gate.admitted -= 1
            return await replace_workers()

        def leave(_) -> None:
            gate.admitted -= 1

        work.add_done_callback(leave)  # a request past its time still holds its place until it ends
        try:
            status, content, records = await asyncio.wait_for(asyncio.shield(work), gate.limits.timeout)
        except TimeoutError:
            late = f"not answered within {gate.limits.timeout:g} s: send fewer or smaller images, or retry"
            return refuse(503, late, **{"Retry-After": RETRY_AFTER})
        except BrokenProcessPool:
            return await replace_workers()
        if records and buffer:
            buffer.records.extend(records)
            if len(buffer.records) >= FLUSH_RECORDS:
                await buffer.flush()
        return Response(content, status_code=status, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="models:/NAME@ALIAS or models:/NAME/VERSION (default: the champion)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--workers", type=int, default=Limits.workers, help="requests that run the model at once")
    parser.add_argument("--queue", type=int, default=Limits.queue, help="requests that may wait beyond those")
    parser.add_argument("--timeout", type=float, default=Limits.timeout, help="seconds a request may take")
    args = parser.parse_args()
    if args.workers < 1 or args.queue < 0 or args.timeout <= 0:
        raise PipelineError("--workers must be ≥ 1, --queue ≥ 0 and --timeout > 0")
    if not port_free(args.host, args.port):
        raise PipelineError(f"{args.host}:{args.port} is taken (another server, make serve?): stop it, or pass --port")
    cfg = load_config()
    about = resolve(cfg, args.model or f"models:/{cfg.register.model_name}@champion")
    import uvicorn

    limits = Limits(args.workers, args.queue, args.timeout)
    app = create_app(
        f"models:/{about['name']}/{about['version']}", about, limits, cfg.prediction_log(), cfg.monitoring.log_images
    )
    print(f"serving {about['name']} version {about['version']} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    run_cli(main)
