"""Shared fixtures: real Paillier keys of several sizes (small ones for speed, 2048 where asked)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from ppinfer.paillier import PrivateKey, PublicKey, generate_keypair

#: The daemon suites' fixtures (tests/daemons/), kept beside their helpers.
pytest_plugins = ["daemon_helpers"]

settings.register_profile(
    "ppinfer", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("ppinfer")

#: python-paillier's tiny textbook key: p = 293, q = 433, n = 126869.
TINY_P, TINY_Q = 293, 433


@pytest.fixture(scope="session")
def tiny_keypair() -> tuple[PublicKey, PrivateKey]:
    public = PublicKey(TINY_P * TINY_Q)
    return public, PrivateKey(public, TINY_P, TINY_Q)


@pytest.fixture(scope="session")
def keypair_512() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(512)


@pytest.fixture(scope="session")
def keypair_2048() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(2048)


@pytest.fixture(scope="session", params=[512, 2048], ids=["512bit", "2048bit"])
def keypair(
    request: pytest.FixtureRequest,
    keypair_512: tuple[PublicKey, PrivateKey],
    keypair_2048: tuple[PublicKey, PrivateKey],
) -> tuple[PublicKey, PrivateKey]:
    """One suite, run at a fast size and at the production default."""
    return keypair_512 if request.param == 512 else keypair_2048


@pytest.fixture(scope="session")
def keypair_1024() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(1024)


@pytest.fixture(scope="session")
def digits() -> Any:
    from ppinfer.example_models import digits_split

    return digits_split()


@pytest.fixture(scope="session")
def digits_relu_model(digits: Any) -> Any:
    from ppinfer.example_models import train_mlp

    return train_mlp(digits, [32], "relu")


@pytest.fixture(scope="session")
def digits_plan(digits_relu_model: Any, digits: Any) -> Any:
    from deployment import compiled

    return compiled(digits_relu_model, digits, "digits-relu")
