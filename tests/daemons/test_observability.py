"""What operators see: the metrics endpoints and the JSON logs (which carry no secret)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from daemon_helpers import Keypair
from deployment import Deployment, deploy
from secret_spellings import assert_never_shown, paillier_secrets

from ppinfer.compiler.plan import Plan
from ppinfer.daemons.metrics import serve_metrics
from ppinfer.errors import ServerError

# --- observability ----------------------------------------------------------------------


def test_metrics_endpoint(keypair_1024: Keypair, digits_plan: Plan) -> None:
    with deploy([digits_plan], keypair_1024) as deployment:
        port, stop = serve_metrics(deployment.model_server.metrics, "127.0.0.1:0")
        try:
            with deployment.client() as client:
                client.predict(np.zeros(64))
                client.predict(np.ones(64) / 4)
            with pytest.raises(ServerError), deployment.client(model="nope"):
                pass
            url = f"http://127.0.0.1:{port}/metrics"
            text = urllib.request.urlopen(url, timeout=10).read().decode()
        finally:
            stop()
    assert 'ppinfer_inferences_total{mode="two-server",model="digits-relu"} 2.0' in text
    assert 'ppinfer_inference_seconds_count{model="digits-relu"} 2.0' in text
    assert 'ppinfer_layer_seconds_count{model="digits-relu",step="1"} 2.0' in text
    assert 'ppinfer_errors_total{status="NOT_FOUND"} 1.0' in text
    assert "ppinfer_serving 1.0" in text and "ppinfer_peer_up 1.0" in text
    assert 'ppinfer_stat_total{name="model_server.key_link.bytes_sent"}' in text
    # levels are gauges, not counters (issue 22, item 12)
    assert 'ppinfer_stat_level{name="model_server.open_sessions"} 0.0' in text
    assert "open_sessions" not in "".join(
        line for line in text.splitlines() if line.startswith("ppinfer_stat_total")
    )


def test_the_key_servers_metrics_have_no_peer_gauge(small_deployment: Deployment) -> None:
    """B exported A's ppinfer_peer_up, always 0 (issue 22, item 12)."""
    port, stop = serve_metrics(small_deployment.key_server.metrics, "127.0.0.1:0")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        stop()
    assert b"ppinfer_peer_up" not in text and b"ppinfer_serving 1.0" in text
    assert b'ppinfer_stat_level{name="pool_size"}' in text


def test_json_logs_carry_no_secrets(tmp_path: Path, small_deployment: Deployment) -> None:
    import logging

    from ppinfer.daemons.logs import JsonFormatter

    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(JsonFormatter().format(record))

    handler = Capture(level=logging.DEBUG)
    root = logging.getLogger("ppinfer")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with pytest.raises(ServerError), small_deployment.client(model="nope"):
            pass
        with small_deployment.client() as client:
            client.predict(np.zeros(64))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    documents = [json.loads(line) for line in records]
    ended = [d for d in documents if d["message"].startswith("session ")]
    assert ended and ended[-1]["inferences"] == 1 and ended[-1]["status"] == "OK"
    assert any(d.get("status") == "NOT_FOUND" for d in documents)
    assert all({"time", "level", "logger", "message"} <= set(d) for d in documents)
    secrets: list[int | bytes] = [*paillier_secrets(small_deployment.private)]
    secrets.append(small_deployment.static.private_bytes_raw())
    assert_never_shown("\n".join(records), secrets)
