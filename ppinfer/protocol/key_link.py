"""What model server A asks of key server B, as a protocol any link implements.

:class:`ppinfer.protocol.in_process.InProcessKeyLink` calls B's core directly;
:class:`ppinfer.rpc.key_link.GrpcKeyLink` sends the same calls over B's gRPC stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gmpy2 import mpz

from ppinfer.compiler.activations import MaskSpec, StageCall
from ppinfer.encoding.packing import SealCall, SlotLayout

__all__ = ["KeyLink"]


class KeyLink(Protocol):
    """A's calls to B for one key; :class:`ppinfer.protocol.key_core.KeyServerCore` answers them."""

    def new_entry(
        self, count: int, mask_bits: int, stages: Sequence[MaskSpec] = ()
    ) -> tuple[str, list[mpz]]:
        """A fresh request entry at B: its id, Enc(-r) (``count`` values), Enc(-t) of every
        stage. It belongs to this link until it is bound; B drops it when the link ends."""
        ...

    def store_share(
        self, entry_id: str, part: int, layout: SlotLayout, count: int, packed: Sequence[int]
    ) -> None:
        """A's masked mask part ``part`` (a stage, then the output) for B's share."""
        ...

    def derive(self, session_id: str, client_public: bytes) -> tuple[bytes, str]:
        """Start a session; returns B's salt for the client's key derivation and the
        instance of B the link reaches (whose entries alone it can bind)."""
        ...

    def bind(self, session_id: str, entry_id: str, request_id: int) -> bytes:
        """Bind an entry to one request; the ticket for the client."""
        ...

    def activate(
        self,
        session_id: str,
        request_id: int,
        stage_index: int,
        call: StageCall,
        values: Sequence[int],
    ) -> list[int]:
        """B's answers d^p·f(z) + t, B having added its share to A's ``values``."""
        ...

    def seal(
        self,
        session_id: str,
        request_id: int,
        call: SealCall,
        values: Sequence[int],
        bind_next: tuple[str, int] | None = None,
    ) -> tuple[bytes, bytes]:
        """The output, completed with B's share and sealed for the client; and the ticket
        of ``bind_next`` (entry id, request id) bound in the same call (b"" without)."""
        ...

    def end(self, session_id: str) -> None: ...

    def close(self) -> None:
        """Release the link; calls after this fail fast (a cancelled client's work stops)."""
        ...
