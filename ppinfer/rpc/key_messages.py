"""The Paillier public key message (PaillierPublicKey), one converter pair for every side
that sends or reads one: B's PublicKeys, and a client-aided client's own key.

(ServerInfo carries B's key to clients as raw bytes, without gmpy2:
:mod:`ppinfer.rpc.session_converters`.)
"""

from __future__ import annotations

from ppinfer.errors import KeyMismatchError, PPInferError
from ppinfer.paillier import PublicKey
from ppinfer.v1 import tensors_pb2

__all__ = ["paillier_key_from_msg", "paillier_key_to_msg"]


def paillier_key_to_msg(public: PublicKey) -> tensors_pb2.PaillierPublicKey:
    return tensors_pb2.PaillierPublicKey(bits=public.bits, n=public.n_bytes, key_id=public.key_id)


def paillier_key_from_msg(
    message: tensors_pb2.PaillierPublicKey, whose: str, bits: range | None = None
) -> PublicKey:
    """``whose`` key (a party's name, for the message), checked against its stated size
    and id, and, with ``bits``, against the sizes accepted."""
    n = int.from_bytes(message.n, "big")
    if bits is not None and n.bit_length() not in bits:
        raise PPInferError(
            f"a {whose} Paillier key must have {bits.start} to {bits.stop - 1} bits, "
            f"got {n.bit_length()}"
        )
    try:
        public = PublicKey(n)
    except ValueError as error:
        raise PPInferError(f"bad {whose} Paillier key: {error}") from error
    if message.bits != public.bits or message.key_id != public.key_id:
        raise KeyMismatchError(f"the {whose} Paillier key does not match its stated size or id")
    return public
