"""Limits A enforces (per peer sessions and bytes, open rate, threads) and streams that
do not behave (silent, idle, cancelled)."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from daemon_helpers import Keypair, health, wait_for
from deployment import deploy
from raw_session import RawSession

from ppinfer.compiler.plan import Plan
from ppinfer.errors import PPInferError, ServerError
from ppinfer.rpc.session_limits import SessionLimits
from ppinfer.v1 import model_service_pb2_grpc

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
        wait_for(lambda: deployment.key_core.stats()["open_sessions"] == 0, "B to end it")


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
        wait_for(lambda: sum(code.done() for code in codes) >= 2, "two refusals", 10)
        assert health(deployment.address) == "SERVING"  # while two silent streams are held
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
        wait_for(lambda: deployment.key_core.stats()["open_sessions"] == 0, "the close", 10)
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
