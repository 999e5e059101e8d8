"""Operating the daemons: TLS and mutual TLS, health, limits, draining, faults, key
rotation, metrics, config files. Real sockets, TLS on, real keys, real processes where
signals are the point (SIGTERM, SIGKILL)."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from deployment import Deployment, client_tls, deploy, dev_certificates
from grpc_health.v1 import health_pb2, health_pb2_grpc
from raw_session import RawSession

from ppinfer.client import Client
from ppinfer.compiler.plan import Plan, save_plan
from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate
from ppinfer.daemons.launch import Daemon, start_daemon
from ppinfer.daemons.metrics import serve_metrics
from ppinfer.errors import PPInferError, ProtocolRevisionError, ServerError
from ppinfer.paillier import PrivateKey, PublicKey, generate_keypair, save_keypair
from ppinfer.protocol.key_core import KeyServerCore
from ppinfer.protocol.x25519_keyfile import save_x25519
from ppinfer.rpc.dev_certificates import CA_FILE, KEY_SERVER_NAME, DevTls, make_dev_certificates
from ppinfer.rpc.key_link import KeyServerClient
from ppinfer.rpc.session_limits import SessionLimits
from ppinfer.rpc.tls import ChannelTls, ServerTls
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc

Keypair = tuple[PublicKey, PrivateKey]


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _health(address: str, ca: Path | None = None) -> str:
    credentials = ChannelTls.from_files(ca or dev_certificates() / CA_FILE).credentials()
    with grpc.secure_channel(address, credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="ppinfer.v1.ModelService"), timeout=5
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@pytest.fixture(scope="module")
def small_deployment(keypair_1024: Keypair, digits_plan: Plan) -> Iterator[Deployment]:
    with deploy([digits_plan], keypair_1024) as deployment:
        yield deployment


# --- mutual TLS between A and B ---------------------------------------------------------


def _key_client(deployment: Deployment, tls: ChannelTls) -> KeyServerClient:
    return KeyServerClient(deployment.key_address, tls, timeout=5)


def test_mutual_tls_refuses_wrong_certificates(
    tmp_path: Path, small_deployment: Deployment
) -> None:
    certs = dev_certificates()
    ca = certs / CA_FILE
    model_cert, model_key = certs / "model-server.crt", certs / "model-server.key"
    right = _key_client(small_deployment, ChannelTls.from_files(ca, KEY_SERVER_NAME, model_cert,
                                                                model_key))  # fmt: skip
    assert right.public_keys()[0].key_id == small_deployment.key_core.key_id
    right.close()

    other = tmp_path / "other-ca"
    make_dev_certificates(other)  # a CA B does not trust, with the same names
    refused = [
        # A's name, but signed by another CA: the handshake fails
        ChannelTls.from_files(
            ca, KEY_SERVER_NAME, other / "model-server.crt", other / "model-server.key"
        ),
        # no client certificate at all
        ChannelTls.from_files(ca, KEY_SERVER_NAME),
    ]
    for tls in refused:
        client = _key_client(small_deployment, tls)
        with pytest.raises(ServerError) as caught:
            client.public_keys()
        assert caught.value.status == "UNAVAILABLE"
        client.close()

    # Signed by the right CA, but it is B's own certificate, not A's: refused by name.
    impostor = _key_client(
        small_deployment,
        ChannelTls.from_files(
            ca, KEY_SERVER_NAME, certs / "key-server.crt", certs / "key-server.key"
        ),
    )
    with pytest.raises(ServerError) as denied:
        impostor.public_keys()
    assert "accepts only the certificate of 'ppinfer-model-server'" in denied.value.message
    impostor.close()


def test_model_server_refuses_a_key_server_of_another_revision(
    small_deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A B from another release would seal outputs the clients misread: A refuses it."""
    certs = dev_certificates()
    tls = ChannelTls.from_files(
        certs / CA_FILE, KEY_SERVER_NAME, certs / "model-server.crt", certs / "model-server.key"
    )
    client = _key_client(small_deployment, tls)
    monkeypatch.setattr("ppinfer.rpc.key_servicer.PROTOCOL_REVISION", 0)  # as before the field
    with pytest.raises(ProtocolRevisionError, match="run the same ppinfer release on both"):
        client.public_keys()
    monkeypatch.undo()
    assert client.public_keys()[0].key_id == small_deployment.key_core.key_id
    client.close()


def test_model_server_accepts_only_the_key_servers_certificate(
    small_deployment: Deployment,
) -> None:
    """A dialling a server whose certificate (same CA) names someone else refuses it."""
    certs = dev_certificates()
    tls = ChannelTls.from_files(
        certs / CA_FILE, KEY_SERVER_NAME, certs / "model-server.crt", certs / "model-server.key"
    )
    client = KeyServerClient(small_deployment.address, tls, timeout=5)  # A's own address
    with pytest.raises(ServerError) as caught:
        client.public_keys()
    assert caught.value.status == "UNAVAILABLE"
    client.close()


def test_a_client_without_the_ca_is_told_what_to_do(small_deployment: Deployment) -> None:
    with pytest.raises(ServerError) as caught, Client(small_deployment.address) as client:
        client.predict(np.zeros(64))
    assert "TLS handshake" in caught.value.message and "--ca" in caught.value.message


# --- health, B going away and coming back ------------------------------------------------


def test_health_follows_the_key_server_and_a_reconnects_by_itself(
    keypair_1024: Keypair, digits_plan: Plan
) -> None:
    x = np.full(64, 0.25)
    with deploy([digits_plan], keypair_1024, health_interval=0.2) as deployment:
        assert _health(deployment.address) == "SERVING"
        with deployment.client() as client:
            expected = client.predict(x)
        model_server = deployment.model_server
        deployment.key_server.stop(0)
        _wait_for(lambda: _health(deployment.address) == "NOT_SERVING", "NOT_SERVING")
        with pytest.raises(ServerError) as caught, deployment.client(retries=0) as client:
            client.predict(x)
        assert caught.value.status == "UNAVAILABLE"
        deployment.start_key_server()
        _wait_for(lambda: _health(deployment.address) == "SERVING", "SERVING again")
        assert deployment.model_server is model_server  # A was never rebuilt
        with deployment.client(retries=0) as client:
            np.testing.assert_allclose(client.predict(x), expected, atol=2e-3)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Daemons:
    """B and A as processes with development TLS, B on a fixed port so it can come back."""

    def __init__(self, folder: Path, plan: Plan, keypair: Keypair) -> None:
        self.folder = folder
        self.tls = DevTls.create(folder / "tls")
        public, private = keypair
        save_keypair(folder / "keys", public, private)
        save_x25519(folder / "keys", X25519PrivateKey.generate())
        save_plan(plan, folder / "plan.ppi")
        self.key_port = _free_port()
        self.key = self.start_key()
        self.model = start_daemon(
            [
                "serve-model", "--model", str(folder / "plan.ppi"),
                "--key-server", f"127.0.0.1:{self.key_port}", "--listen", "127.0.0.1:0",
                "--health-interval", "0.2", "--drain-seconds", "60", "--allow-small-keys",
                *self.tls.model_server_flags(),
            ],
            folder / "a.log",
        )  # fmt: skip

    def start_key(self) -> Daemon:
        return start_daemon(
            [
                "serve-key", "--keys", str(self.folder / "keys"),
                "--listen", f"127.0.0.1:{self.key_port}", "--pool", "256", "--allow-small-keys",
                *self.tls.key_server_flags(),
            ],
            self.folder / "b.log",
        )  # fmt: skip

    def client(self, **options: Any) -> Client:
        return Client(self.model.address, tls=ChannelTls.from_files(self.tls.ca), **options)

    def close(self) -> None:
        self.model.stop()
        self.key.stop()


@pytest.fixture
def daemons(tmp_path: Path, deep_plan: Plan, keypair_1024: Keypair) -> Iterator[_Daemons]:
    running = _Daemons(tmp_path, deep_plan, keypair_1024)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def deep_plan(digits: Any) -> Plan:
    """Six layers: an inference makes five round trips to B, time to act in between."""
    import torch
    from torch import nn

    from ppinfer.compiler import compile_model

    torch.manual_seed(7)
    layers: list[nn.Module] = []
    widths = [64, 96, 96, 96, 96, 96, 10]
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    model = nn.Sequential(*layers[:-1], nn.Softmax(dim=1))
    return compile_model(model, (64,), "deep", calibration=digits.train_x).plan


def test_key_server_killed_mid_inference_then_restarted(
    daemons: _Daemons, deep_plan: Plan, digits: Any
) -> None:
    """SIGKILL B during an inference: the client gets UNAVAILABLE (not a hang, not a wrong
    answer); B restarts; A, never restarted, serves again and the retry is correct."""
    x = digits.test_x[0]
    expected = simulate(Program(deep_plan), x)
    killed = threading.Event()

    def kill_b(request_id: int, step: int, steps: int) -> None:
        if step == 1 and not killed.is_set():
            killed.set()
            os.kill(daemons.key.process.pid, signal.SIGKILL)

    with daemons.client(on_progress=kill_b, retries=0, timeout=60) as client:
        with pytest.raises(ServerError) as caught:
            client.predict(x)
        assert killed.is_set()
        assert caught.value.status == "UNAVAILABLE"
        assert "key server" in caught.value.message
        daemons.key.process.wait(10)
        _wait_for(lambda: _health(daemons.model.address, daemons.tls.ca) == "NOT_SERVING",
                  "A to notice")  # fmt: skip
        daemons.key = daemons.start_key()
        _wait_for(lambda: _health(daemons.model.address, daemons.tls.ca) == "SERVING",
                  "A to reconnect")  # fmt: skip
        killed.set()  # no more killing
        np.testing.assert_allclose(client.predict(x), expected, atol=2e-3)  # a new session
    assert daemons.model.process.poll() is None  # A ran throughout


def test_sigterm_drains_an_inference_in_flight(
    daemons: _Daemons, deep_plan: Plan, digits: Any
) -> None:
    x = digits.test_x[1]
    expected = simulate(Program(deep_plan), x)
    sent = threading.Event()

    def stop_a(request_id: int, step: int, steps: int) -> None:
        if step == 1 and not sent.is_set():
            sent.set()
            daemons.model.process.send_signal(signal.SIGTERM)

    with daemons.client(on_progress=stop_a, retries=0, timeout=60) as client:
        logits = client.predict(x)  # answered although A got SIGTERM during it
        assert sent.is_set()
        np.testing.assert_allclose(logits, expected, atol=2e-3)
        assert daemons.model.process.wait(60) == 0
        with pytest.raises(ServerError) as caught:
            client.predict(x)
        assert caught.value.status == "UNAVAILABLE"
    log = (daemons.folder / "a.log").read_text()
    assert "draining" in log and "Traceback" not in log


def test_sighup_rotates_the_key_servers_key(daemons: _Daemons, digits: Any) -> None:
    """New key files and SIGHUP: a session opened before goes on under the old key, A
    adopts the new one for new sessions, neither daemon restarts."""
    x = digits.test_x[2]
    with daemons.client() as before:
        expected = before.predict(x)
        assert before.model is not None
        old_key = before.model.key_id
        public, private = generate_keypair(1024)
        save_keypair(daemons.folder / "keys", public, private, overwrite=True)
        daemons.key.process.send_signal(signal.SIGHUP)

        _wait_for(
            lambda: _key_id(daemons.model.address, daemons.tls.ca) != old_key,
            "A to adopt the new key",
        )
        np.testing.assert_allclose(before.predict(x), expected, atol=2e-3)
        assert before.model.key_id == old_key
    with daemons.client() as after:
        np.testing.assert_allclose(after.predict(x), expected, atol=2e-3)
    assert daemons.key.process.poll() is None and daemons.model.process.poll() is None
    assert "key rotated" in (daemons.folder / "b.log").read_text()


def test_stub_retries_with_a_new_session_when_a_restarts(
    keypair_1024: Keypair, digits_plan: Plan
) -> None:
    """A restarts between two predictions: the stub's stream ends with UNAVAILABLE, and it
    opens a new session (new keys, new request ids) and sends the input again."""
    x = np.full(64, 0.5)
    with deploy([digits_plan], keypair_1024) as deployment, deployment.client() as client:
        expected = client.predict(x)
        session = client.session_id
        deployment.restart_model_server()
        np.testing.assert_allclose(client.predict(x), expected, atol=2e-3)
        assert client.session_id != session
        assert client.stats.inferences == 2


def test_key_rotation_keeps_sessions_in_flight(keypair_1024: Keypair, digits_plan: Plan) -> None:
    x = np.full(64, 0.5)
    expected = simulate(Program(digits_plan), x)
    with deploy([digits_plan], keypair_1024, health_interval=0.2, retire_seconds=0.0) as deployment:
        old_key = deployment.key_core.fingerprint
        with deployment.client() as old_session:
            np.testing.assert_allclose(old_session.predict(x), expected, atol=2e-3)
            _, new_private = generate_keypair(1024)
            from ppinfer.paillier import RandomizerPool

            deployment.keys.rotate(
                KeyServerCore(
                    new_private,
                    X25519PrivateKey.generate(),
                    RandomizerPool(new_private.public, new_private, 64),
                )
            )
            _wait_for(lambda: _key_id(deployment.address) != old_key, "A to adopt the new key")
            # the session opened under the old key goes on under it
            np.testing.assert_allclose(old_session.predict(x), expected, atol=2e-3)
            assert deployment.keys.retired() == 1
        _wait_for(lambda: deployment.keys.retired() == 0, "the old key to be retired")
        with deployment.client() as new_session:
            assert new_session.model is not None
            assert new_session.model.key_id == deployment.key_core.fingerprint != old_key
            np.testing.assert_allclose(new_session.predict(x), expected, atol=2e-3)


def _key_id(address: str, ca: Path | None = None) -> str:
    """The key id A states for new sessions (GetServerInfo; no session opened)."""
    credentials = ChannelTls.from_files(ca or dev_certificates() / CA_FILE).credentials()
    with grpc.secure_channel(address, credentials) as channel:
        info = model_service_pb2_grpc.ModelServiceStub(channel).GetServerInfo(
            model_service_pb2.ServerInfoRequest(), timeout=10
        )
    return str(info.key_id)


# --- limits ------------------------------------------------------------------------------


def test_per_peer_session_and_byte_limits(keypair_1024: Keypair, digits_plan: Plan) -> None:
    x = np.full(64, 0.5)
    limits = SessionLimits(max_sessions=8, max_per_peer=2, max_bytes_per_peer=100_000)
    with (
        deploy([digits_plan], keypair_1024, limits=limits) as deployment,
        deployment.client() as one,
        deployment.client() as two,
    ):
        with pytest.raises(ServerError) as caught, deployment.client() as three:
            three.predict(x)
        assert caught.value.status == "RESOURCE_EXHAUSTED", caught.value.message
        assert "127.0.0.1" in caught.value.message and "2 sessions" in caught.value.message
        expected = one.predict(x)  # the others are unaffected
        np.testing.assert_allclose(two.predict(x), expected, atol=2e-3)
    small = SessionLimits(max_sessions=8, max_per_peer=8, max_bytes_per_peer=64)
    with deploy([digits_plan], keypair_1024, limits=small) as deployment:
        with pytest.raises(ServerError) as caught, deployment.client() as client:
            client.predict(x)
        assert caught.value.status == "RESOURCE_EXHAUSTED"
        assert "request bytes" in caught.value.message


def test_cancelling_a_session_ends_its_work_on_the_key_server(
    keypair_1024: Keypair, digits_plan: Plan
) -> None:
    with (
        deploy([digits_plan], keypair_1024) as deployment,
        RawSession(deployment.address, deployment.tls) as raw,
    ):
        raw.predict(1, np.zeros(64))
        assert deployment.key_core.stats()["open_sessions"] == 1
        raw.drop()  # cancel, as a dropped phone connection would
        _wait_for(lambda: deployment.key_core.stats()["open_sessions"] == 0, "B to end it")


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
    secret = str(int(small_deployment.private.p))
    assert not any(secret in line for line in records)


# --- config files -----------------------------------------------------------------------


def _ppinfer(*arguments: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ppinfer", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_config_file_check_and_override(tmp_path: Path, keypair_512: Keypair) -> None:
    public, private = keypair_512
    save_keypair(tmp_path / "keys", public, private)
    save_x25519(tmp_path / "keys", X25519PrivateKey.generate())
    make_dev_certificates(tmp_path / "tls")
    config = tmp_path / "b.toml"
    config.write_text(
        'keys = "keys"\nlisten = "127.0.0.1:0"\npool = 128\n'
        'tls_cert = "tls/key-server.crt"\ntls_key = "tls/key-server.key"\n'
        'client_ca = "tls/ca.crt"\nlog_format = "json"\n'
    )
    small = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert small.returncode == 1 and "--allow-small-keys" in small.stderr
    config.write_text(config.read_text() + "allow_small_keys = true\n")
    good = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert good.returncode == 0, good.stderr
    assert "512-bit Paillier key" in good.stdout

    config.write_text(config.read_text() + "pool_size = 3\n")
    unknown = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert unknown.returncode == 1 and "unknown key(s) pool_size" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    config.write_text('keys = "keys"\npool = "many"\nallow_small_keys = true\n')
    typed = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert typed.returncode == 1 and "pool must be int" in typed.stderr

    config.write_text('keys = "keys"\nallow_small_keys = true\n')  # no TLS files, no --insecure
    bare = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert bare.returncode == 1 and "--insecure" in bare.stderr
    insecure = _ppinfer("serve-key", "--config", str(config), "--check-config", "--insecure")
    assert insecure.returncode == 0 and "no TLS" in insecure.stderr  # the warning

    model = _ppinfer(
        "serve-model", "--model", str(tmp_path / "missing.ppi"), "--key-server", "x:1",
        "--insecure", "--check-config",
    )  # fmt: skip
    assert model.returncode == 1 and "missing.ppi" in model.stderr


def test_server_tls_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(PPInferError, match="not a PEM certificate"):
        ServerTls.from_files(tmp_path / "cert.pem", tmp_path / "key.pem")
    with pytest.raises(PPInferError, match="cannot read"):
        ChannelTls.from_files(tmp_path / "absent.pem")
    with pytest.raises(PPInferError, match="needs its key"):
        ChannelTls.from_files(client_tls_path(), cert=tmp_path / "cert.pem")
    certs = tmp_path / "certs"
    make_dev_certificates(certs)
    assert (certs / "model-server.key").stat().st_mode & 0o777 == 0o600
    assert (certs / "ca.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(PPInferError, match="exist"):
        make_dev_certificates(certs)
    assert client_tls().ca is not None


def client_tls_path() -> Path:
    return dev_certificates() / CA_FILE


# --- streams that do not behave --------------------------------------------------------


def _silent() -> Iterator[Any]:
    """A request stream that sends nothing until the test ends (a stalled client)."""
    threading.Event().wait(30)
    yield from ()


def test_silent_streams_cannot_exhaust_the_model_server(
    keypair_1024: Keypair, digits_plan: Plan
) -> None:
    """Finding 6: streams that never sent open were not counted, had no deadline and held
    a thread each; four of them made health checks time out on a 4-worker A. Now they
    count on arrival (past the limit: RESOURCE_EXHAUSTED at once), the ones admitted are
    ended after open_timeout, and health checks keep answering meanwhile."""
    limits = SessionLimits(max_sessions=2, max_per_peer=8, max_bytes_per_peer=1 << 20)
    with (
        deploy(
            [digits_plan], keypair_1024, limits=limits, workers=6, open_timeout=1.5
        ) as deployment,
        deployment.channel() as channel,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        calls = [stub.Session(_silent()) for _ in range(4)]
        codes = [pool.submit(call.code) for call in calls]
        _wait_for(lambda: sum(code.done() for code in codes) >= 2, "two refusals", 10)
        assert _health(deployment.address) == "SERVING"  # while two silent streams are held
        finished = [code.result(timeout=20) for code in codes]
        details = sorted(call.details() or "" for call in calls)
    assert sorted(code.name for code in finished) == [
        "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"
    ]  # fmt: skip
    assert any("no open message within 1.5 s" in detail for detail in details)


def test_idle_sessions_are_closed_and_the_stub_reopens(
    keypair_1024: Keypair, digits_plan: Plan
) -> None:
    with (
        deploy([digits_plan], keypair_1024, idle_timeout=0.5) as deployment,
        deployment.client() as client,
    ):
        first = client.predict(np.zeros(64))
        session = client.session_id
        _wait_for(lambda: deployment.key_core.stats()["open_sessions"] == 0, "the close", 10)
        np.testing.assert_allclose(client.predict(np.zeros(64)), first, atol=2e-3)
        assert client.session_id != session  # a new session, new keys


def test_opens_are_rate_limited_per_peer(keypair_1024: Keypair, digits_plan: Plan) -> None:
    """An open costs A and B key agreement (and, precomputing, a whole offline half)."""
    limits = SessionLimits(8, 8, 1 << 20, open_rate=0.05, open_burst=2)
    with deploy([digits_plan], keypair_1024, limits=limits) as deployment:
        for _ in range(2):
            with deployment.client():
                pass
        with pytest.raises(ServerError) as caught, deployment.client():
            pass
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    assert "opens sessions faster than 0.05 a second" in caught.value.message


def test_a_model_server_keeps_threads_beyond_its_sessions(
    keypair_1024: Keypair, digits_plan: Plan
) -> None:
    with pytest.raises(PPInferError, match=r"workers \(4\) must be at least max_sessions"):
        limits = SessionLimits(2, 2, 1 << 20)
        with deploy([digits_plan], keypair_1024, limits=limits, workers=4):
            pass


def _key_server_settings(folder: Path, **overrides: Any) -> dict[str, Any]:
    from ppinfer.daemons.options import KEY_SERVER_OPTIONS

    settings = {option.name: option.default for option in KEY_SERVER_OPTIONS}
    settings.update(keys=str(folder), insecure=True, listen="127.0.0.1:0", pool=4, **overrides)
    return settings


@pytest.mark.parametrize("kind", ["short", "full"])
def test_the_randomizers_setting_reaches_the_key_server_at_start_and_on_sighup(
    tmp_path: Path, keypair_1024: Keypair, kind: str
) -> None:
    """Finding 7: randomizers = "full" was parsed and then never used."""
    from ppinfer.daemons.daemon import key_server_from_settings
    from ppinfer.paillier.fixedbase import FixedBaseRandomizers

    public, private = keypair_1024
    save_keypair(tmp_path, public, private)
    save_x25519(tmp_path, X25519PrivateKey.generate())
    settings = _key_server_settings(tmp_path, randomizers=kind, allow_small_keys=True)
    running, keys = key_server_from_settings(settings)
    try:
        cores = [keys.current]
        new_public, new_private = generate_keypair(1024)
        save_keypair(tmp_path, new_public, new_private, overwrite=True)
        assert running.reload is not None
        running.reload()  # what SIGHUP does
        cores.append(keys.current)
        assert cores[1].key_id == new_public.key_id
        for core in cores:
            assert isinstance(core.pool.generator, FixedBaseRandomizers) == (kind == "short")
    finally:
        running.stop(0)


def test_small_keys_are_served_only_when_asked(tmp_path: Path, keypair_1024: Keypair) -> None:
    from ppinfer.daemons.daemon import build_key_server, check_key_server

    public, private = keypair_1024
    save_keypair(tmp_path, public, private)
    save_x25519(tmp_path, X25519PrivateKey.generate())
    with pytest.raises(PPInferError, match="at least 2048"):
        build_key_server(private, X25519PrivateKey.generate())
    with pytest.raises(PPInferError, match="allow-small-keys"):
        check_key_server(_key_server_settings(tmp_path))
    assert "1024-bit" in check_key_server(_key_server_settings(tmp_path, allow_small_keys=True))


def test_a_busy_port_is_refused_by_both_daemons(small_deployment: Deployment) -> None:
    """Issue 22, item 1: gRPC's default SO_REUSEPORT let a second daemon start on a busy
    port, and the kernel split the clients between the two."""
    from deployment import model_server_tls

    from ppinfer.daemons.daemon import build_key_server, build_model_server

    busy = small_deployment.key_address
    with pytest.raises(PPInferError, match=f"cannot listen on {busy}: address in use"):
        build_key_server(
            small_deployment.private,
            small_deployment.static,
            small_deployment.key_address,
            allow_small_keys=True,
        )
    serving, to_key_server = model_server_tls()
    with pytest.raises(PPInferError, match="address in use"):
        build_model_server(
            small_deployment.plans,
            small_deployment.key_address,
            small_deployment.address,
            tls=serving,
            key_server_tls=to_key_server,
            allow_small_keys=True,
        )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listen", "localhost"], "listen must be HOST:PORT with a port number"),
        (["--max-sessions", "-1"], "max_sessions must be at least 1"),
        (["--workers", "0"], "workers must be at least 1"),
        (["--pool", "-5"], "pool must be at least 0"),
        (["--insecure"], "--insecure contradicts tls_cert, tls_key, client_ca"),
        (["--tls-key", "{tls}/model-server.key"], "does not belong to the certificate"),
    ],
)
def test_check_config_refuses_what_the_daemon_could_not_serve(
    tmp_path: Path, keypair_512: Keypair, flags: list[str], message: str
) -> None:
    """Issue 22, items 7 and 8: --check-config passed each of these; the daemon then took
    port 443, served no session, crashed on a traceback, or served with the wrong key."""
    public, private = keypair_512
    save_keypair(tmp_path / "keys", public, private)
    save_x25519(tmp_path / "keys", X25519PrivateKey.generate())
    tls = DevTls.create(tmp_path / "tls")
    base = [
        "serve-key", "--keys", str(tmp_path / "keys"), "--listen", "127.0.0.1:0",
        "--allow-small-keys", *tls.key_server_flags(), "--check-config",
    ]  # fmt: skip
    assert _ppinfer(*base).returncode == 0
    result = _ppinfer(*base, *[flag.format(tls=tls.folder) for flag in flags])
    assert result.returncode == 1, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("loosen", "message"),
    [
        ("keys/paillier.key.json", "Paillier secret key"),
        ("keys/x25519.key.json", "X25519 secret key"),
        ("tls/key-server.key", "TLS private key"),
        ("keys", "anyone may replace files there"),
    ],
)
def test_secret_files_others_may_read_are_refused(
    tmp_path: Path, keypair_512: Keypair, loosen: str, message: str
) -> None:
    """Issue 22, item 6: these were served without a word."""
    public, private = keypair_512
    save_keypair(tmp_path / "keys", public, private)
    save_x25519(tmp_path / "keys", X25519PrivateKey.generate())
    tls = DevTls.create(tmp_path / "tls")
    target = tmp_path / loosen
    target.chmod(0o777 if target.is_dir() else 0o644)
    command = [
        "serve-key", "--keys", str(tmp_path / "keys"), "--listen", "127.0.0.1:0",
        "--allow-small-keys", *tls.key_server_flags(), "--check-config",
    ]  # fmt: skip
    refused = _ppinfer(*command)
    assert refused.returncode == 1 and message in refused.stderr
    assert str(target) in refused.stderr and "Traceback" not in refused.stderr
    assert _ppinfer(*command, "--allow-loose-permissions").returncode == 0


def test_sighup_is_logged_by_a_and_its_workers_die_with_it(daemons: _Daemons) -> None:
    """Issue 22, item 11: SIGHUP killed A without a log line, and a killed A left its
    worker processes (about 100 MB) behind."""
    from benchmarks.procfs import tree

    model = daemons.model.process
    model.send_signal(signal.SIGHUP)
    _wait_for(lambda: "SIGHUP ignored" in (daemons.folder / "a.log").read_text(), "the log")
    assert model.poll() is None
    workers = tree(model.pid) - {model.pid}
    assert workers  # the forkserver and its linear-algebra workers
    model.kill()
    model.wait()
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers", 15)


def test_a_failed_sighup_reload_keeps_the_key_and_is_counted(
    tmp_path: Path, keypair_1024: Keypair
) -> None:
    """Issue 22, item 5: a reload that cannot read the new key files (made by root, or
    left readable by others) used to leave only a log line; B keeps its key and counts it."""
    from ppinfer.daemons.daemon import key_server_from_settings

    public, private = keypair_1024
    save_keypair(tmp_path, public, private)
    save_x25519(tmp_path, X25519PrivateKey.generate())
    running, keys = key_server_from_settings(_key_server_settings(tmp_path, allow_small_keys=True))
    try:
        new_public, new_private = generate_keypair(1024)
        save_keypair(tmp_path, new_public, new_private, overwrite=True)
        (tmp_path / "paillier.key.json").chmod(0o644)
        assert running.reload is not None
        running.reload()
        assert keys.current.key_id == public.key_id
        assert keys.stats()["key_reload_failures"] == 1
    finally:
        running.stop(0)
