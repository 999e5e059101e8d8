"""What model server A asks of key server B, as a protocol any link implements.

:class:`ppinfer.protocol.in_process.InProcessKeyLink` calls B's core directly;
:class:`ppinfer.rpc.key_link.GrpcKeyLink` sends the same calls over B's gRPC stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gmpy2 import mpz

from ppinfer.compiler.activations import MaskSpec, StageCall
from ppinfer.encoding.packing import SealCall

__all__ = ["KeyLink"]


class KeyLink(Protocol):
    """A's calls to B for one key; :class:`ppinfer.protocol.key_core.KeyServerCore` answers them."""

    def derive(self, session_id: str, client_public: bytes) -> bytes:
        """Start a session; returns B's salt for the client's key derivation."""
        ...

    def masks(
        self,
        session_id: str,
        request_id: int,
        count: int,
        mask_bits: int,
        stages: Sequence[MaskSpec] = (),
    ) -> list[mpz]:
        """Enc(-r) for the input mask r (``count`` values), then Enc(-t) of every stage."""
        ...

    def activate(
        self,
        session_id: str,
        request_id: int,
        stage_index: int,
        call: StageCall,
        packed: Sequence[int],
    ) -> list[int]:
        """B's answers d^p·f(z) + t to one stage's packed, perturbed input."""
        ...

    def seal(
        self, session_id: str, request_id: int, call: SealCall, packed: Sequence[int]
    ) -> bytes:
        """The masked output, decrypted by B and sealed for the client."""
        ...

    def end(self, session_id: str) -> None: ...

    def close(self) -> None:
        """Release the link; calls after this fail fast (a cancelled client's work stops)."""
        ...
