"""Serve a registered model over HTTP: image files in; classes, the top k and attention maps out.

    python -m pipeline.serve [--model models:/NAME@champion] [--host 127.0.0.1] [--port 5001]   (make serve)

    POST /invocations  {"inputs": ["<base64 image file>", ...], "params": {"top_k": 5, "overlay": true}}
                       or {"inputs": <uint8 images N×C×H×W>}: the body `mlflow models serve` takes
    GET  /ping         200 once the model is loaded
    GET  /version      which model answers: name, version, alias, test accuracy, classes, input

The model is the registry's MLflow model (`pipeline/model/serving.py`: the same decoding as
training), loaded once. A request it cannot answer gets a 4xx and `{"error": "<one line>"}`: 400
(not JSON, no inputs, not an image, a decompression bomb, a wrong shape), 413 (a body over
`MAX_BYTES` or more than `MAX_IMAGES` images), 415 (not JSON); the server goes on serving.
"""

import argparse
import json
from io import StringIO

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli

MAX_BYTES = 32 * 1024 * 1024
MAX_IMAGES = 256


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
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise PipelineError(f"{reference}: not in the registry ({first}); train and register a model first") from None
    accuracy = version.tags.get("test_accuracy")
    return {
        "model": reference, "name": name, "version": str(version.version), "aliases": list(version.aliases),
        "test_accuracy": float(accuracy) if accuracy else None, "run_id": version.run_id,
        "data_version": version.tags.get("data_version"),
    }  # fmt: skip


def load(cfg: Config, reference: str):
    """The registered MLflow model (pyfunc) and its description."""
    import mlflow

    from pipeline.core.tracking import connect

    if not reference.startswith("models:/"):
        raise PipelineError(f"--model {reference}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    connect(cfg)
    about = describe(reference)
    model = mlflow.pyfunc.load_model(reference)
    info = model.unwrap_python_model().info
    about.update(
        classes=info.classes, image_size=info.image_size, channels=info.channels, decision=info.rule.describe()
    )
    return model, about


def create_app(model, about: dict):
    """The FastAPI app around a loaded pyfunc model."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    app = FastAPI(title="attention-classifier", docs_url=None, redoc_url=None)

    def refuse(status: int, reason: str) -> JSONResponse:
        return JSONResponse({"error": reason}, status_code=status)

    @app.get("/ping")
    def ping() -> Response:
        return Response("\n", media_type="text/plain")

    @app.get("/version")
    def version() -> dict:
        return about

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return refuse(415, 'send JSON: Content-Type: application/json with {"inputs": [...]}')
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BYTES:
            return refuse(413, f"body of {int(declared):,} bytes, over {MAX_BYTES:,}: send fewer or smaller images")
        body = await request.body()
        if len(body) > MAX_BYTES:
            return refuse(413, f"body of {len(body):,} bytes, over {MAX_BYTES:,}: send fewer or smaller images")
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
        try:
            answer = model.predict(inputs, params={"top_k": int(params.get("top_k", 5)),
                                                   "overlay": bool(params.get("overlay", False))})  # fmt: skip
        except ValueError as error:  # the model's BadInput (its own copy of the class: the model brings its code)
            return refuse(400, (str(error).splitlines() or [type(error).__name__])[0][:300])
        except TypeError as error:
            return refuse(400, f"inputs: {(str(error).splitlines() or [type(error).__name__])[0][:200]}")
        text = StringIO()
        predictions_to_json(answer, text)
        return Response(text.getvalue(), media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="models:/NAME@ALIAS or models:/NAME/VERSION (default: the champion)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    cfg = load_config()
    model, about = load(cfg, args.model or f"models:/{cfg.registry.model_name}@champion")
    import uvicorn

    print(f"serving {about['name']} version {about['version']} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(model, about), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    run_cli(main)
