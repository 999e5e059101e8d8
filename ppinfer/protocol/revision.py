"""The protocol revision and the one gate every party passes a peer through.

The client states its revision in OpenSession.protocol and B in PublicKeys.protocol;
model server A refuses either when it differs. Fields that a revision introduced are
also how a party recognises a peer that predates it (an empty salt, a zero modulus):
:func:`require_field` words that case the same way as a stated mismatch.

Revision history: 0 (no field) sealed full-width logits; 1 reduces them
(ModelInfo.output_modulus_bits, SealRequest.shift and modulus_bits); 2 salts the session
keys with B's fresh salt and binds them to the session id and to a fingerprint over both
of B's public keys (SessionOpened.key_salt); 3 takes every Paillier operation off the
request path: B makes request entries ahead of any session, holds its decrypted shares,
and hands each entry's mask seed to the client in a ticket (SessionOpened.tickets,
InferResult.ticket).
"""

from __future__ import annotations

from ppinfer.errors import ProtocolRevisionError

__all__ = ["PROTOCOL_REVISION", "require_field", "require_revision"]

PROTOCOL_REVISION = 3


def require_revision(peer: str, stated: int, this_side: str) -> None:
    """Refuse a ``peer`` that states another revision than ``this_side`` speaks (both are
    party names, as the message says which of them to upgrade)."""
    if stated != PROTOCOL_REVISION:
        older = stated < PROTOCOL_REVISION
        raise ProtocolRevisionError(
            f"the {peer} speaks protocol revision {stated}, "
            f"{'older' if older else 'newer'} than this {this_side}'s {PROTOCOL_REVISION}: "
            f"upgrade the ppinfer {peer if older else this_side} "
            "(run the same ppinfer release on both)"
        )


def require_field(present: bool, peer: str, what: str, upgrade: str) -> None:
    """Refuse a ``peer`` whose message lacks ``what``, a field of this revision."""
    if not present:
        raise ProtocolRevisionError(
            f"the {peer} sent no {what}: it predates protocol revision {PROTOCOL_REVISION}; "
            f"{upgrade} (run the same ppinfer release on both)"
        )
