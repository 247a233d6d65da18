"""`fdl serve`: a run's (or an export's) predictions over HTTP (FastAPI + uvicorn, the `fdl[serve]` extra).

    from fdl.runs.serve import make_app, serve, serving
    app = make_app("runs/mnist1d_mlp-20261125-101500")   # loads the run, compiles every batch size
    with serving(app) as url:                            # uvicorn in a thread, a free loopback port
        httpx.post(f"{url}/predict", json={"inputs": x.tolist()}).json()   # x: (n, 40) raw inputs
    serve("runs/mnist1d_mlp-20261125-101500", port=8000)  # until Ctrl-C; or: fdl serve RUN_DIR

Endpoints:
  POST /predict   JSON `{"inputs": [example, ...]}` (a list of examples) or `{"inputs": example}`
                  (one example: a nested list of the model's input shape), or an .npy body
                  (`content-type: application/x-npy`) of shape (n, *input_shape) or input_shape.
                  Answers `{"outputs": ...}` — the model's outputs (logits for a classifier) — and
                  for a classifier (a run that minimized cross-entropy, `classifier_head`; an
                  export whose metadata says logits) `"probabilities"` and `"labels"` (the class
                  names when the data has them, else indices). A list of examples gets lists of
                  answers; one example gets one answer, without the example axis.
  GET /health     `{"status": "ok"}` while the batching worker runs (503 otherwise).
  GET /metadata   input shape and dtype, classes, head, the config hash (a run's env.json
                  config_sha256, an export's metadata), the fdl version, and the batching
                  settings and counters (compiled calls made, by size).

Bad requests get a 4xx with `{"error": "<one line>"}` and the server serves on.
Concurrent requests share compiled calls (`fdl.runs.batching.RequestBatcher`).
"""
import asyncio
import contextlib
import io
import json
import os
import socket
import threading
import time
from typing import Iterator

import numpy as np

from fdl.errors import did_you_mean
from fdl.records import package_version
from fdl.runs.batching import RequestBatcher, batch_sizes
from fdl.runs.predictors import Predictor, answer, load_predictor

__all__ = ["BadRequest", "make_app", "parse_inputs", "serve", "serving"]

NPY_TYPES = ("application/x-npy", "application/octet-stream")


class BadRequest(ValueError):
    """A request the server refuses: `status` (4xx) and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_inputs(body: bytes, content_type: str, input_shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
    """(x: (n, *input_shape) float32 finite, single) from a /predict body; single: it held one example.

    Raises:
      BadRequest: 415 another content type; 400 not JSON / not .npy, no "inputs", ragged
        lists; 422 not numbers, no examples, another shape, NaN or infinity.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        x = _json_inputs(body)
    elif kind in NPY_TYPES:
        x = _npy_inputs(body)
    else:
        raise BadRequest(415, f"content-type {kind or '(none)'!r}: send application/json "
                              '({"inputs": [...]}) or application/x-npy (an .npy file)')
    if x.dtype.kind not in "iuf":
        what = {"U": "strings", "S": "bytes", "b": "booleans", "O": "nulls or mixed values"}.get(x.dtype.kind,
                                                                                                 str(x.dtype))
        raise BadRequest(422, f"inputs: {what}, expected numbers — send int or float values")
    if x.shape[:1] == (0,):
        raise BadRequest(422, "inputs: no examples (an empty list) — send at least one")
    single = x.shape == input_shape
    if not single and x.shape[1:] != input_shape:
        raise BadRequest(422, f"inputs: shape {x.shape}, the model takes examples of shape {input_shape} — "
                              f"send a list of them, (n, {', '.join(map(str, input_shape))}), or one")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused next
        x = x.astype(np.float32)[None] if single else x.astype(np.float32)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        where = f"example {bad[0][0]}, index {tuple(int(i) for i in bad[0][1:])}"
        raise BadRequest(422, f"inputs: NaN or infinity (in float32) at {where} — send finite numbers")
    return x, single


def _json_inputs(body: bytes) -> np.ndarray:
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequest(400, f'body: not JSON ({error}) — send {{"inputs": [[...], ...]}}') from None
    if not isinstance(request, dict) or "inputs" not in request:
        found = f"keys {sorted(request)}" if isinstance(request, dict) else f"a JSON {type(request).__name__}"
        hint = next((did_you_mean(key, ["inputs"]) for key in request), "") if isinstance(request, dict) else ""
        raise BadRequest(400, f'body: expected {{"inputs": [...]}}, got {found}{" — " + hint if hint else ""}')
    unknown = sorted(set(request) - {"inputs"})
    if unknown:
        raise BadRequest(400, f"body: unknown keys {unknown} — send only inputs")
    try:
        return np.asarray(request["inputs"])
    except ValueError:
        raise BadRequest(400, "inputs: ragged lists (examples or rows of different lengths) — every example "
                              "must have the model's input shape") from None


def _npy_inputs(body: bytes) -> np.ndarray:
    try:
        return np.lib.format.read_array(io.BytesIO(body), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise BadRequest(400, f"body: not an .npy array ({error}) — send np.save's bytes") from None


async def _read_body(request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(f"over {limit}", limit)
    return bytes(body)


def _too_large(size, limit: int) -> BadRequest:
    return BadRequest(413, f"body: {size} bytes, the server takes at most {limit} (--max-request-bytes) — "
                           "send fewer examples per request")


def make_app(model: "str | os.PathLike | Predictor", *, checkpoint: str = "best", max_batch: int = 64,
             batch_window_ms: float = 3.0, max_request_bytes: int = 8 << 20):
    """The FastAPI app serving `model`, its every batch size compiled, its batching worker started.

    Args:
      model: a run directory (`fdl train`'s), an export folder (`fdl export`'s), or a Predictor.
      checkpoint: "best" or "last", for a run directory.
      max_batch: the most examples in one compiled call (1: no request batching).
      batch_window_ms: how long a request waits, in milliseconds, for others to share its call.
      max_request_bytes: the largest /predict body accepted (413 beyond).

    Returns:
      The app; `app.state.predictor` and `app.state.batcher` (its `stats()` counts the calls made).

    Raises:
      ModuleNotFoundError: the serve extra is not installed.
      ValueError: max_batch, batch_window_ms or max_request_bytes out of range.
      ConfigError: `model` is neither a run directory, an export nor an `fdl.save` folder, or its checkpoint cannot be loaded.
      FileNotFoundError, ValueError: an export's model file is missing or damaged.
    """
    fastapi = _serve_extra()[0]
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException  # fastapi's own base: routing's 404s are these

    batch_sizes(max_batch, batch_window_ms / 1e3)  # refused before the model loads
    if not (isinstance(max_request_bytes, int) and max_request_bytes > 0):
        raise ValueError(f"max_request_bytes: expected a positive number of bytes, got {max_request_bytes!r}")
    predictor = model if hasattr(model, "predict") else load_predictor(model, checkpoint)
    batcher = RequestBatcher(predictor.predict, predictor.input_shape, max_batch=max_batch,
                             window_s=batch_window_ms / 1e3)
    compile_s = batcher.warm_up()
    batcher.start()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = fastapi.FastAPI(title="fdl serve", version=package_version("fdl") or "unknown", lifespan=lifespan)
    app.state.predictor, app.state.batcher, app.state.compile_s = predictor, batcher, compile_s

    def error(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)  # 404, 405, ... in the same one-line form
    async def http_error(request, exception):
        return error(exception.status_code, str(exception.detail))

    @app.get("/health")
    async def health():
        return {"status": "ok"} if batcher.alive else error(503, "batching worker stopped — restart the server")

    @app.get("/metadata")
    async def metadata():
        return _metadata(predictor, batcher, max_request_bytes)

    @app.post("/predict")
    async def predict(request: fastapi.Request):
        try:
            body = await _read_body(request, max_request_bytes)
            x, single = parse_inputs(body, request.headers.get("content-type", ""), predictor.input_shape)
        except BadRequest as refused:
            return error(refused.status, str(refused))
        try:
            outputs = await asyncio.wrap_future(batcher.submit(x))
        except Exception as failure:  # the model failed on good input: say so, serve on
            return error(500, f"prediction failed: {type(failure).__name__}: {str(failure).splitlines()[0]}")
        result = answer(outputs, predictor.head, predictor.class_names)
        return {name: (value[0] if single else value).tolist() for name, value in result.items()}

    return app


def _serve_extra():
    """(fastapi, uvicorn), or a one-line error naming the extra to install."""
    try:
        import fastapi
        import uvicorn
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"fdl serve needs {error.name} — install it with pip install \"fdl[serve]\"") \
            from None
    return fastapi, uvicorn


def _metadata(predictor: Predictor, batcher: RequestBatcher, max_request_bytes: int) -> dict:
    classes = list(predictor.class_names) if predictor.class_names else predictor.metadata.get("num_classes")
    return {
        **predictor.metadata, "fdl_version": package_version("fdl"),
        "input_shape": list(predictor.input_shape), "input_dtype": predictor.input_dtype,
        "inputs": 'POST /predict {"inputs": [example, ...]} (a list of examples) or {"inputs": example} '
                  "(one), each example a nested list of input_shape numbers; or an .npy body "
                  "(content-type: application/x-npy) of shape (n, *input_shape) or input_shape",
        "head": predictor.head, "classes": classes,
        "outputs": ["outputs", "probabilities", "labels"] if predictor.head else ["outputs"],
        "max_request_bytes": max_request_bytes,
        "batching": {"max_batch": batcher.max_batch, "window_ms": batcher.window_s * 1e3,
                     "sizes": list(batcher.sizes), **batcher.stats()},
    }


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one).

    Raises:
      OSError: the address is in use or cannot be bound; the message names it and the fix.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise OSError(f"--host {host} --port {port}: cannot listen there ({error.strerror}) — pick another "
                      "--port, or stop the server that holds it") from None


def _uvicorn_server(app, log_level: str):
    uvicorn = _serve_extra()[1]
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level))


def serve(model: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000, checkpoint: str = "best",
          max_batch: int = 64, batch_window_ms: float = 3.0, max_request_bytes: int = 8 << 20,
          log_level: str = "info") -> None:
    """Serves `model` (a run directory or an export folder) on http://host:port until interrupted (Ctrl-C).

    The address is bound before the model loads, so a port in use fails at once.
    Arguments as `make_app`'s; `log_level` is uvicorn's ("warning" for quieter logs).

    Raises:
      OSError: host:port cannot be bound. And `make_app`'s errors.
    """
    _serve_extra()
    listener = _bind(host, port)
    with listener:
        app = make_app(model, checkpoint=checkpoint, max_batch=max_batch, batch_window_ms=batch_window_ms,
                       max_request_bytes=max_request_bytes)
        address = f"http://{'[' + host + ']' if ':' in host else host}:{listener.getsockname()[1]}"
        print(f"fdl serve: {model} on {address} — POST /predict, GET /health, GET /metadata "
              f"(batch sizes {list(app.state.batcher.sizes)} compiled in {app.state.compile_s:.1f} s)", flush=True)
        _uvicorn_server(app, log_level).run(sockets=[listener])


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Runs `app` under uvicorn in a background thread for a `with` block; yields its base URL.

    For tests and benchmarks in one process (port 0: a free port). The server stops,
    and the app's batching worker with it, when the block ends.

    Raises:
      OSError: host:port cannot be bound.
      RuntimeError: the server did not start within 30 s.
    """
    listener = _bind(host, port)
    server = _uvicorn_server(app, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="fdl-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        if not server.started:
            raise RuntimeError(f"serving: uvicorn did not start on {host}:{listener.getsockname()[1]}")
        yield f"http://{host}:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()
