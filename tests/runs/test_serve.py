"""`fdl serve`: answers over loopback HTTP equal `load_run(...).predict`; bad requests are one-line 4xx;
concurrent requests share compiled calls of fixed sizes and compile nothing after start-up."""
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from omegaconf import OmegaConf

import fdl
from fdl.config import ConfigError
from fdl.records import RunDir, config_sha256, package_version
from fdl.runs.batching import RequestBatcher, batch_sizes
from fdl.runs.export import export
from fdl.runs.predictors import answer, classifier_head, config_hash
from fdl.runs.serve import make_app, serve, serving

LIMIT = 64 << 10  # max_request_bytes of the module's server


def softmax(z):
    exp = np.exp(z - z.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def examples(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 40)).astype(np.float32)


@pytest.fixture(scope="module")
def mlp(shipped_runs):
    """(url, reference LoadedRun) of the MLP run served in this process: max batch 8, a 30 ms window.

    The reference is the server's own `fdl.load_run(path)`: its `predict` runs `run.evaluator`, not the
    server's calls (the fdl serve command's test loads the run apart).
    """
    app = make_app(shipped_runs["mlp"], max_batch=8, batch_window_ms=30, max_request_bytes=LIMIT)
    with serving(app) as url:
        yield url, app.state.predictor.run


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30) as client:
        yield client


def check_answer(body, run, x):
    expected = run.predict(x)
    np.testing.assert_allclose(body["outputs"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(body["probabilities"], softmax(expected), rtol=1e-5, atol=1e-7)
    assert body["labels"] == [str(label) for label in expected.argmax(-1)]  # mnist1d's class names: "0".."9"


def test_answers_equal_load_run_predict_for_json_and_npy(mlp, client):
    url, run = mlp
    x = examples(5)
    check_answer(client.post(f"{url}/predict", json={"inputs": x.tolist()}).json(), run, x)
    reply = client.post(f"{url}/predict", content=npy(x[:3].astype(np.float64)),
                        headers={"content-type": "application/x-npy"})
    check_answer(reply.json(), run, x[:3])


def test_one_example_is_answered_without_the_example_axis(mlp, client):
    url, run = mlp
    x = examples(1, seed=1)
    expected = run.predict(x)[0]
    for reply in (client.post(f"{url}/predict", json={"inputs": x[0].tolist()}),
                  client.post(f"{url}/predict", content=npy(x[0]), headers={"content-type": "application/x-npy"})):
        body = reply.json()
        np.testing.assert_allclose(body["outputs"], expected, rtol=1e-5, atol=1e-6)
        assert body["labels"] == str(expected.argmax())


def test_health_and_metadata(mlp, client, shipped_runs):
    url, run = mlp
    assert client.get(f"{url}/health").json() == {"status": "ok"}
    meta = client.get(f"{url}/metadata").json()
    assert (meta["input_shape"], meta["input_dtype"], meta["head"]) == ([40], "float32", "softmax")
    assert meta["classes"] == [str(c) for c in range(10)] and meta["checkpoint"] == run.checkpoint
    assert meta["config_sha256"] == config_sha256(run.run_dir.config_text())  # env.json's: the config trained
    assert meta["fdl_version"] == package_version("fdl") and meta["max_request_bytes"] == LIMIT
    assert meta["batching"]["max_batch"] == 8 and meta["batching"]["sizes"] == [1, 2, 4, 8]
    assert meta["path"] == str(shipped_runs["mlp"])


GOOD = [0.5] * 40
BAD_REQUESTS = {  # name: (content-type, body, status, the error's match)
    "not-json": ("application/json", b'{"inputs": [[1, 2', 400, r"^body: not JSON \(Expecting"),
    "content-type": ("text/plain", b"1 2 3", 415, r"content-type 'text/plain': send application/json"),
    "no-inputs": ("application/json", {"input": [GOOD]}, 400, r"got keys \['input'\] — did you mean 'inputs'"),
    "not-an-object": ("application/json", [GOOD], 400, r"got a JSON list"),
    "unknown-key": ("application/json", {"inputs": [GOOD], "top_k": 3}, 400, r"unknown keys \['top_k'\]"),
    "wrong-shape": ("application/json", {"inputs": [GOOD + [0.5]]}, 422,
                    r"^inputs: shape \(1, 41\), the model takes examples of shape \(40,\) — send .*\(n, 40\)"),
    "scalar": ("application/json", {"inputs": 3}, 422, r"inputs: shape \(\)"),
    "strings": ("application/json", {"inputs": [["a"] * 40]}, 422, r"^inputs: strings, expected numbers"),
    "booleans": ("application/json", {"inputs": [[True] * 40]}, 422, r"^inputs: booleans"),
    "nulls": ("application/json", {"inputs": [[None] * 40]}, 422, r"^inputs: nulls or mixed values"),
    "nan": ("application/json", b'{"inputs": [[NaN' + b", 0" * 39 + b"]]}", 422,
            r"^inputs: NaN or infinity \(in float32\) at example 0, index \(0,\) — send finite numbers"),
    "infinity": ("application/json", {"inputs": [GOOD, GOOD[:7] + [float("inf")] + GOOD[8:]]}, 422,
                 r"at example 1, index \(7,\)"),
    "float32-overflow": ("application/json", {"inputs": [GOOD[:39] + [1e39]]}, 422, r"at example 0, index \(39,\)"),
    "empty": ("application/json", {"inputs": []}, 422, r"^inputs: no examples"),
    "ragged": ("application/json", {"inputs": [GOOD, GOOD[:39]]}, 400, r"^inputs: ragged lists"),
    "too-large": ("application/json", {"inputs": [GOOD] * 2000}, 413,
                  rf"^body: \d+ bytes, the server takes at most {LIMIT} \(--max-request-bytes\)"),
    "too-large-chunked": ("application/json", iter([b" " * (LIMIT // 2)] * 3), 413, rf"^body: over {LIMIT} bytes"),
    "npy-garbage": ("application/x-npy", b"\x93NUMPY garbage", 400, r"^body: not an \.npy array"),
    "npy-pickled": ("application/x-npy", npy(np.array([{}], dtype=object)), 400, r"^body: not an \.npy array"),
    "npy-complex": ("application/x-npy", npy(np.zeros((1, 40), np.complex64)), 422, r"^inputs: complex64"),
    "npy-wrong-shape": ("application/x-npy", npy(np.zeros((3, 39), np.float32)), 422, r"shape \(3, 39\)"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_a_bad_request_is_a_one_line_4xx_and_the_server_serves_on(mlp, client, name):
    url, run = mlp
    content_type, body, status, match = BAD_REQUESTS[name]
    content = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    reply = client.post(f"{url}/predict", content=content, headers={"content-type": content_type})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert list(reply.json()) == ["error"] and "\n" not in error
    assert re.search(match, error), error
    x = examples(2, seed=2)
    check_answer(client.post(f"{url}/predict", json={"inputs": x.tolist()}).json(), run, x)


def test_unknown_routes_answer_in_the_same_error_form(mlp, client):
    url = mlp[0]
    assert (client.get(f"{url}/nope").status_code, client.get(f"{url}/nope").json()) == (404, {"error": "Not Found"})
    assert client.get(f"{url}/predict").json() == {"error": "Method Not Allowed"}


def burst(url, xs):
    """POSTs every x in `xs` at once, one thread each; returns their answers, in order."""
    answers, start = [None] * len(xs), threading.Barrier(len(xs))

    def post(i):
        with httpx.Client(timeout=30) as client:
            start.wait()
            answers[i] = client.post(f"{url}/predict", json={"inputs": xs[i].tolist()}).json()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(xs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows(mlp, client, compiles):
    url, run = mlp
    xs = [examples(1 + i % 3, seed=10 + i) for i in range(16)]  # 31 examples over 16 requests
    before = client.get(f"{url}/metadata").json()["batching"]
    with compiles.counting() as compiled:
        answers = burst(url, xs)
    after = client.get(f"{url}/metadata").json()["batching"]
    for x, body in zip(xs, answers):
        check_answer(body, run, x)
    assert len(compiled) == 0  # every size was compiled at start-up
    calls = after["calls"] - before["calls"]
    assert (after["requests"] - before["requests"], after["examples"] - before["examples"]) == (16, 31)
    assert 4 <= calls < 16, after  # at most 8 examples a call; fewer calls than requests: they were batched


def test_a_request_larger_than_max_batch_is_split_over_calls(shipped_runs, client):
    app = make_app(shipped_runs["batchnorm"], max_batch=4, batch_window_ms=0)
    run, x = app.state.predictor.run, examples(7, seed=3)
    with serving(app) as url:
        check_answer(client.post(f"{url}/predict", json={"inputs": x.tolist()}).json(), run, x)
        stats = client.get(f"{url}/metadata").json()["batching"]
    assert stats["calls_by_size"] == {"1": 0, "2": 0, "4": 2} and stats["examples"] == 7  # 4, then 3 padded to 4


def test_an_export_folder_is_served_as_its_run_dynamic_or_fixed_batch(shipped_runs, tmp_path, client):
    run, x = fdl.load_run(shipped_runs["mlp"]), examples(6, seed=5)
    for batch, max_batch in (("dynamic", 4), (4, 8)):  # a fixed batch of 4 under calls of 1..8 rows
        out = export(run, out=tmp_path / f"mlp-{batch}", batch=batch)
        with serving(make_app(out, max_batch=max_batch, batch_window_ms=0)) as url:
            check_answer(client.post(f"{url}/predict", json={"inputs": x.tolist()}).json(), run, x)
            meta = client.get(f"{url}/metadata").json()
        assert (meta["source"], meta["format"], meta["export_batch"], meta["head"]) == (
            "export", "stablehlo", batch, "softmax")
        assert meta["config_sha256"] == config_sha256(run.run_dir.config_text()) and len(meta["classes"]) == 10


def test_a_saved_model_folder_is_served_as_its_run(shipped_runs, tmp_path, client):
    run, x = fdl.load_run(shipped_runs["batchnorm"]), examples(5, seed=6)
    folder = fdl.save(run, tmp_path / "saved")
    with serving(make_app(folder, max_batch=4, batch_window_ms=0)) as url:
        check_answer(client.post(f"{url}/predict", json={"inputs": x.tolist()}).json(), run, x)
        meta = client.get(f"{url}/metadata").json()
    assert (meta["source"], meta["head"], len(meta["classes"])) == ("saved", "softmax", 10)
    assert meta["config_sha256"] == config_sha256(run.run_dir.config_text())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_fdl_serve_command_serves_and_stops_on_ctrl_c(shipped_runs, client):
    port, x = free_port(), examples(3, seed=4)
    command = [sys.executable, "-m", "fdl.cli.main", "serve", str(shipped_runs["mlp"]), "--port", str(port),
               "--max-batch", "2", "--batch-window-ms", "1", "--checkpoint", "last"]
    server = subprocess.Popen(command, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        reply = client.post(f"http://127.0.0.1:{port}/predict", json={"inputs": x.tolist()}).json()
        meta = client.get(f"http://127.0.0.1:{port}/metadata").json()
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    check_answer(reply, fdl.load_run(shipped_runs["mlp"], "last"), x)
    assert (meta["checkpoint"], meta["batching"]["sizes"], meta["batching"]["calls"]) == ("last", [1, 2], 2)
    assert f"on http://127.0.0.1:{port} — POST /predict" in output and server.returncode == 130, output


class Doubler:
    """A Predictor of raw outputs, 2 * x, that fails on examples holding a 13."""

    input_shape, input_dtype, head, class_names, metadata = (3,), "float32", None, None, {"source": "test"}

    def predict(self, x):
        if (x == 13).any():
            raise ValueError("unlucky 13\nsecond line")
        return 2 * x


def test_raw_outputs_are_served_as_they_are_and_a_failing_model_is_a_500(client):
    app = make_app(Doubler(), max_batch=2, batch_window_ms=0)
    with serving(app) as url:
        assert client.post(f"{url}/predict", json={"inputs": [[1, 2, 3]]}).json() == {"outputs": [[2, 4, 6]]}
        failed = client.post(f"{url}/predict", json={"inputs": [1, 13, 3]})
        assert (failed.status_code, failed.json()) == (500, {"error": "prediction failed: ValueError: unlucky 13"})
        assert client.post(f"{url}/predict", json={"inputs": [0.5, 1, 2]}).json() == {"outputs": [1, 2, 4]}
        assert client.get(f"{url}/metadata").json()["outputs"] == ["outputs"]
        app.state.batcher.close()
        assert client.get(f"{url}/health").json() == {"error": "batching worker stopped — restart the server"}
        closed = client.post(f"{url}/predict", json={"inputs": [1, 2, 3]}).json()
        assert closed == {"error": "prediction failed: RuntimeError: request batcher: closed — start a new server"}


# ---- the parts, without HTTP ----------------------------------------------------------------

def test_batch_sizes_are_powers_of_two_up_to_max_batch():
    assert (batch_sizes(1), batch_sizes(8), batch_sizes(12)) == ((1,), (1, 2, 4, 8), (1, 2, 4, 8, 12))
    with pytest.raises(ValueError, match=r"max_batch: expected a positive number .* got 0 — use 1 to turn"):
        batch_sizes(0)
    with pytest.raises(ValueError, match=r"batch window: expected a duration >= 0 seconds, got -1"):
        RequestBatcher(lambda x: x, (2,), window_s=-1)


def test_the_batcher_gathers_queued_requests_into_padded_calls_and_survives_a_failure():
    shapes = []

    def predict(x):  # doubles; fails on a batch holding a 13
        shapes.append(x.shape)
        if (x == 13).any():
            raise ValueError("unlucky")
        return 2 * x

    batcher = RequestBatcher(predict, (2,), max_batch=4, window_s=0)
    xs = [np.full((n, 2), i, np.float32) for i, n in enumerate([1, 2, 2, 1])]
    futures = [batcher.submit(x) for x in xs]  # queued before the worker starts: gathered at once
    batcher.start()
    for x, future in zip(xs, futures):
        np.testing.assert_array_equal(future.result(5), 2 * x)
    assert shapes == [(4, 2), (2, 2)]  # rows 1+2+1 of the third request, then its last one and the fourth, padded
    with pytest.raises(ValueError, match="unlucky"):
        batcher.submit(np.full((3, 2), 13, np.float32)).result(5)
    np.testing.assert_array_equal(batcher.submit(np.ones((3, 2), np.float32)).result(5), 2 * np.ones((3, 2)))
    assert batcher.stats() == {"calls": 3, "requests": 5, "examples": 9, "calls_by_size": {1: 0, 2: 1, 4: 2}}
    with pytest.raises(ValueError, match=r"x: shape \(2,\), expected \(n, 2\) with n >= 1 — give one example as "):
        batcher.submit(xs[1][0])
    batcher.close()
    with pytest.raises(RuntimeError, match="request batcher: closed"):
        batcher.submit(xs[0])


def test_warm_up_refuses_a_model_with_several_outputs():
    batcher = RequestBatcher(lambda x: (x, x), (2,), max_batch=2)
    with pytest.raises(TypeError, match=r"predict: expected one array of 1 rows .* got tuple — serve a model with "
                                        "a single output"):
        batcher.warm_up()


@pytest.mark.parametrize("config, head", [
    ({"loss": {"name": "cross_entropy"}}, "softmax"),
    ({"loss": {"name": "binary_cross_entropy"}}, "sigmoid"),
    ({"loss": {"name": "mse"}}, None),
    ({"loss": {"name": "cross_entropy"}, "objective": {"name": "supervised", "args": {}}}, "softmax"),
    ({"loss": {"name": "cross_entropy"}, "objective": {"name": "supervised", "args": {"loss": "huber"}}}, None),
    ({"loss": {"name": "cross_entropy"}, "objective": {"name": "vae", "args": {}}}, None),
], ids=["cross_entropy", "binary", "mse", "supervised", "supervised-huber", "other-objective"])
def test_the_loss_a_run_minimized_decides_whether_it_is_a_classifier(config, head):
    assert classifier_head(OmegaConf.create({"objective": None, **config})) == head


def test_sigmoid_answers_are_the_logistic_of_the_logits_and_labels_their_sign():
    logits = np.array([[-2.0], [0.5], [-200.0]], np.float32)
    body = answer(logits, "sigmoid", ("cat", "dog"))
    np.testing.assert_allclose(body["probabilities"], [[1 / (1 + np.exp(2.0))], [1 / (1 + np.exp(-0.5))], [0.0]],
                               rtol=1e-6)
    assert body["labels"].tolist() == [["cat"], ["dog"], ["cat"]]
    assert list(answer(logits, None, None)) == ["outputs"]


def test_config_hash_reads_env_json_and_names_a_damaged_one(tmp_path):
    run_dir = RunDir(tmp_path)
    assert config_hash(run_dir) is None
    run_dir.write_env({"config_sha256": "ab12"})
    assert config_hash(run_dir) == "ab12"
    run_dir.env_path.write_text("{")
    with pytest.raises(ValueError, match=r"env.json: damaged \(Expecting .* — restore it from a copy"):
        config_hash(run_dir)
    run_dir.env_path.write_text("[]")
    with pytest.raises(ValueError, match=r"env.json: damaged \(not a JSON object\)"):
        config_hash(run_dir)


def test_start_up_errors_name_the_culprit(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"neither a run directory \(no config.yaml\), an export \(no "
                                          r"metadata.json\) nor a saved model \(no model.json\) — pass the "
                                          r"folder `fdl train`, `fdl export` or `fdl.save` wrote"):
        make_app(tmp_path)
    with pytest.raises(ValueError, match="max_request_bytes: expected a positive number of bytes, got 0"):
        make_app(tmp_path, max_request_bytes=0)
    with pytest.raises(ValueError, match="max_batch: expected a positive number"):  # before loading anything
        make_app(tmp_path, max_batch=0)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"--host 127.0.0.1 --port {port}: cannot listen there .* pick another"):
            serve(tmp_path, port=port)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ModuleNotFoundError, match=r'fdl serve needs fastapi — install it with pip install '
                                                  r'"fdl\[serve\]"'):
        make_app(tmp_path)
