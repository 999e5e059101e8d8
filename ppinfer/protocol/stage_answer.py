"""Answer one activation stage with the secret key: decrypt, evaluate exactly, re-encrypt.

The client-aided client answers A this way. Key server B uses the same checks, the same
decryption and the same :func:`ppinfer.compiler.activations.evaluate_stage`, then answers y + t in
the clear under its answer mask instead of re-encrypting (``servers/key_core.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from gmpy2 import mpz

from ppinfer.compiler.activations import StageCall, evaluate_stage
from ppinfer.encoding.packing import SlotLayout
from ppinfer.errors import LimitExceededError, PPInferError
from ppinfer.paillier.keys import PrivateKey
from ppinfer.paillier.ops import check_ciphertexts, decrypt_packed, encrypt
from ppinfer.paillier.randomizers import RandomizerSource

__all__ = [
    "MAX_FRAC_BITS",
    "MAX_VALUES_PER_CALL",
    "answer_stage",
    "check_count",
    "check_stage",
    "decrypt_values",
]

#: Largest number of values in one call (a 4096-wide layer has 4096).
MAX_VALUES_PER_CALL = 1 << 20
#: Fixed-point scales beyond this are nonsense and would make huge shifts.
MAX_FRAC_BITS = 1024


def check_count(count: int) -> None:
    if not 1 <= count <= MAX_VALUES_PER_CALL:
        raise LimitExceededError(f"a call carries 1 to {MAX_VALUES_PER_CALL} values, got {count}")


def check_stage(call: StageCall) -> None:
    """Refuse a stage no honest peer sends: unknown functions, silly scales, ragged windows."""
    call.stage.check()
    check_count(call.count)
    if not (0 <= call.in_frac <= MAX_FRAC_BITS and 0 <= call.out_frac <= MAX_FRAC_BITS):
        raise PPInferError(f"fixed-point scales must be in [0, {MAX_FRAC_BITS}]")
    if call.count % call.stage.group:
        raise PPInferError(f"{call.count} values do not split into windows of {call.stage.group}")


def decrypt_values(
    private: PrivateKey, packed: Sequence[int], layout: SlotLayout, count: int
) -> list[int]:
    """The ``count`` values packed in ``packed``, each ciphertext checked first."""
    check_count(count)
    layout.check_fits(private.public.bits)
    ciphertexts = [mpz(c) for c in packed]
    check_ciphertexts(private.public, ciphertexts)
    return decrypt_packed(private, ciphertexts, layout, count)


def answer_stage(
    private: PrivateKey, call: StageCall, values: Sequence[int], randomizers: RandomizerSource
) -> list[mpz]:
    """Fresh encryptions of the stage's results on decrypted ``values``, one per window."""
    outputs = evaluate_stage(call.stage, values, call.in_frac, call.out_frac)
    return encrypt(private.public, outputs, randomizers)
