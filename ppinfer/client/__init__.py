"""The client's public entry point: the lightweight stub an app embeds.

It depends on grpcio, protobuf, numpy and cryptography only, never phe, gmpy2, torch
or ray: the import-layer contract (tests/test_layers.py) and tests/client/test_client_light.py
both check it.
"""

from ppinfer.client.postprocess import client_activation
from ppinfer.protocol.client_session import ClientStats, ModelDescription
from ppinfer.rpc.client_stub import Client

__all__ = ["Client", "ClientStats", "ModelDescription", "client_activation"]
