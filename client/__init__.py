"""The lightweight client stub (imported as ``ppinfer.client``).

It depends on grpcio, protobuf, numpy and cryptography only: never phe, gmpy2 or torch
(tests/test_client_light.py imports it with those blocked).
"""

from ppinfer.client.stub import Client, ClientStats, ModelDescription

__all__ = ["Client", "ClientStats", "ModelDescription"]
