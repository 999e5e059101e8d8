"""ppinfer: private inference for constrained clients with two non-colluding servers.

This top-level package holds only what the client path needs (numpy, protobuf, grpcio).
Server-side Paillier arithmetic lives in :mod:`ppinfer.paillier` (``ppinfer[server]``).
"""

from ppinfer.errors import PPInferError
from ppinfer.fixedpoint import FixedPoint
from ppinfer.packing import SlotLayout

__version__ = "0.1.0"

__all__ = ["FixedPoint", "PPInferError", "SlotLayout", "__version__"]
