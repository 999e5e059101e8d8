"""A and B under faults: mutual TLS between them, health as B goes away and comes back,
restarts, draining, key rotation. Real sockets, TLS on, real processes where signals are
the point (SIGTERM, SIGKILL, SIGHUP)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from daemon_helpers import Daemons, Keypair, health, key_id, wait_for
from deployment import Deployment, deploy, dev_certificates

from ppinfer.client import Client
from ppinfer.compiler.plan import Plan
from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate
from ppinfer.errors import ProtocolRevisionError, ServerError
from ppinfer.paillier import generate_keypair, save_keypair
from ppinfer.protocol.key_core import KeyServerCore
from ppinfer.rpc.dev_certificates import CA_FILE, KEY_SERVER_NAME, make_dev_certificates
from ppinfer.rpc.key_link import KeyServerClient
from ppinfer.rpc.tls import ChannelTls

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
        assert health(deployment.address) == "SERVING"
        with deployment.client() as client:
            expected = client.predict(x)
        model_server = deployment.model_server
        deployment.key_server.stop(0)
        wait_for(lambda: health(deployment.address) == "NOT_SERVING", "NOT_SERVING")
        with pytest.raises(ServerError) as caught, deployment.client(retries=0) as client:
            client.predict(x)
        assert caught.value.status == "UNAVAILABLE"
        deployment.start_key_server()
        wait_for(lambda: health(deployment.address) == "SERVING", "SERVING again")
        assert deployment.model_server is model_server  # A was never rebuilt
        with deployment.client(retries=0) as client:
            np.testing.assert_allclose(client.predict(x), expected, atol=2e-3)


def test_key_server_killed_mid_inference_then_restarted(
    daemons: Daemons, deep_plan: Plan, digits: Any
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
        wait_for(lambda: health(daemons.model.address, daemons.tls.ca) == "NOT_SERVING",
                  "A to notice")  # fmt: skip
        daemons.key = daemons.start_key()
        wait_for(lambda: health(daemons.model.address, daemons.tls.ca) == "SERVING",
                  "A to reconnect")  # fmt: skip
        killed.set()  # no more killing
        np.testing.assert_allclose(client.predict(x), expected, atol=2e-3)  # a new session
    assert daemons.model.process.poll() is None  # A ran throughout


def test_sigterm_drains_an_inference_in_flight(
    daemons: Daemons, deep_plan: Plan, digits: Any
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


def test_sighup_rotates_the_key_servers_key(daemons: Daemons, digits: Any) -> None:
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

        wait_for(
            lambda: key_id(daemons.model.address, daemons.tls.ca) != old_key,
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
            wait_for(lambda: key_id(deployment.address) != old_key, "A to adopt the new key")
            # the session opened under the old key goes on under it
            np.testing.assert_allclose(old_session.predict(x), expected, atol=2e-3)
            assert deployment.keys.retired() == 1
        wait_for(lambda: deployment.keys.retired() == 0, "the old key to be retired")
        with deployment.client() as new_session:
            assert new_session.model is not None
            assert new_session.model.key_id == deployment.key_core.fingerprint != old_key
            np.testing.assert_allclose(new_session.predict(x), expected, atol=2e-3)
