"""The lightweight client stub (imported as ``ppinfer.client``).

It depends on grpcio, protobuf, numpy and cryptography only: never phe, gmpy2 or torch.
The stub itself arrives with the end-to-end protocol; this package already fixes the
import boundary that tests/test_client_light.py guards.
"""

__all__: list[str] = []
