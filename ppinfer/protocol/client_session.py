"""The client's whole share of the protocol, as pure functions: mask the input, unmask the output.

Costs per inference: a ChaCha20 keystream and an int64 addition on the way in; an AEAD
open, a subtraction modulo a power of two and a permutation on the way out. No Paillier,
no big-integer arithmetic beyond Python's own ints for the output values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ppinfer.encoding.fixedpoint import FixedPoint
from ppinfer.encoding.wire_bytes import decode_signed
from ppinfer.errors import EncodingRangeError, PPInferError
from ppinfer.protocol.session_keys import SessionKeys, input_mask, open_sealed

__all__ = ["mask_input", "unmask_output"]


def mask_input(
    keys: SessionKeys,
    request_id: int,
    x: npt.ArrayLike,
    input_shape: tuple[int, ...],
    input_format: FixedPoint,
    mask_bits: int,
) -> npt.NDArray[np.int64]:
    """u = round(x * 2^f) + PRG(k_mask, request_id), shaped like the model's input."""
    raw = np.asarray(x)
    if raw.dtype.kind not in "biuf":  # strings, objects, complex: no silent cast
        raise EncodingRangeError(f"an input is real numbers, not {raw.dtype} values")
    values = raw.astype(np.float64)
    if values.shape != input_shape:
        raise PPInferError(f"input shape {values.shape} does not match the model's {input_shape}")
    encoded = input_format.encode(values)
    mask = input_mask(keys.k_mask, request_id, encoded.size, mask_bits).reshape(encoded.shape)
    return encoded + mask


def unmask_output(
    keys: SessionKeys,
    session_id: str,
    request_id: int,
    sealed: bytes,
    output_mask: Sequence[int],
    permutation: Sequence[int],
    value_bytes: int,
    output_frac_bits: int,
    modulus_bits: int,
) -> npt.NDArray[np.float64]:
    """Open B's sealed values, subtract A's masks mod 2^modulus_bits (both were reduced
    to that modulus; the difference is a signed value), undo A's permutation: the logits."""
    count = len(permutation)
    if len(output_mask) != count or sorted(permutation) != list(range(count)):
        raise PPInferError("the server sent an inconsistent output mask or permutation")
    if not 2 <= modulus_bits <= 8 * value_bytes:
        raise PPInferError(
            f"the server's output modulus 2^{modulus_bits} does not match its "
            f"{value_bytes}-byte output values"
        )
    masked = decode_signed(
        open_sealed(keys.k_out, session_id, request_id, sealed), value_bytes, count
    )
    modulus, half = 1 << modulus_bits, 1 << (modulus_bits - 1)
    logits = np.empty(count, dtype=np.float64)
    for position, source in enumerate(permutation):
        value = (masked[position] - output_mask[position] + half) % modulus - half
        logits[source] = float(value) / 2.0**output_frac_bits
    return logits
