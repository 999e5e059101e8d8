"""Paillier operations over whole vectors of ciphertexts (lists of gmpy2 integers).

With g = n + 1, Enc(m; r) = (1 + m*n) * r^n mod n^2. Plaintexts are signed integers with
|m| < n/2. Ciphertexts are plain ``mpz`` values in lists: no object per number, and
gmpy2's list functions (which release the GIL) where an operation shares a base or an
exponent. Results of :func:`add`, :func:`add_plain` and :func:`mul_scalar` are not
re-randomized; call :func:`rerandomize` before a ciphertext leaves for a party that may
have seen its inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import gmpy2
from gmpy2 import mpz

from ppinfer.encoding.fixedpoint import residue_to_signed, signed_to_residue
from ppinfer.encoding.packing import SlotLayout
from ppinfer.errors import CiphertextFormatError, CiphertextRangeError
from ppinfer.paillier.keys import PrivateKey, PublicKey
from ppinfer.paillier.randomizers import RandomizerSource

__all__ = [
    "add",
    "add_packed",
    "add_plain",
    "check_ciphertexts",
    "decrypt",
    "decrypt_packed",
    "decrypt_raw",
    "encrypt",
    "horner_pack",
    "mul_scalar",
    "mul_scalar_all",
    "pack",
    "rerandomize",
]


def encrypt(
    public: PublicKey, plaintexts: Iterable[int], randomizers: RandomizerSource
) -> list[mpz]:
    """Encrypt signed integers; one modular multiplication each when the randomizers are ready."""
    residues = signed_to_residue(plaintexts, int(public.n))
    n, nsquare = public.n, public.nsquare
    rn = randomizers(len(residues))
    # 1 + m*n < n^2 already, so g^m costs one small multiplication, no reduction.
    return [(1 + m * n) * r % nsquare for m, r in zip(residues, rn, strict=True)]


#: The mod-p half of every decryption runs here while the calling thread does the mod-q
#: half: gmpy2's list functions release the GIL, so on two cores a decryption takes the
#: time of one half-size exponentiation (B's online time is mostly decryptions).
_P_HALF = (
    ThreadPoolExecutor(max_workers=1, thread_name_prefix="crt")
    if (os.cpu_count() or 1) > 1
    else None
)


def decrypt_raw(private: PrivateKey, ciphertexts: Sequence[mpz]) -> list[mpz]:
    """The plaintext residues in [0, n), by CRT: two half-size exponentiations each,
    the two halves at once on two cores."""
    p, q = private.p, private.q
    bases = list(ciphertexts)
    if _P_HALF is None:
        at_p = gmpy2.powmod_base_list(bases, private.p_minus_1, private.psquare)
    else:
        p_half = _P_HALF.submit(gmpy2.powmod_base_list, bases, private.p_minus_1, private.psquare)
    at_q = gmpy2.powmod_base_list(bases, private.q_minus_1, private.qsquare)
    if _P_HALF is not None:
        at_p = p_half.result()
    hp, hq, p_inv = private.hp, private.hq, private.p_inv_mod_q
    residues = []
    for xp, xq in zip(at_p, at_q, strict=True):
        mp = (xp - 1) // p * hp % p
        mq = (xq - 1) // q * hq % q
        residues.append(mp + p * ((mq - mp) * p_inv % q))
    return residues


def decrypt(private: PrivateKey, ciphertexts: Sequence[mpz]) -> list[int]:
    """The signed plaintexts: residues above n/2 are negative."""
    return residue_to_signed(decrypt_raw(private, ciphertexts), int(private.public.n))


def add(public: PublicKey, left: Sequence[mpz], right: Sequence[mpz]) -> list[mpz]:
    """Enc(a + b), elementwise."""
    _same_length(left, right)
    nsquare = public.nsquare
    return [a * b % nsquare for a, b in zip(left, right, strict=True)]


def add_plain(
    public: PublicKey, ciphertexts: Sequence[mpz], plaintexts: Sequence[int]
) -> list[mpz]:
    """Enc(a + m) for signed plaintexts m, elementwise."""
    _same_length(ciphertexts, plaintexts)
    residues = signed_to_residue(plaintexts, int(public.n))
    n, nsquare = public.n, public.nsquare
    return [c * (1 + m * n) % nsquare for c, m in zip(ciphertexts, residues, strict=True)]


def mul_scalar(public: PublicKey, ciphertexts: Sequence[mpz], scalars: Sequence[int]) -> list[mpz]:
    """Enc(w * a) for signed integer scalars w, elementwise (negative w inverts mod n^2)."""
    _same_length(ciphertexts, scalars)
    nsquare = public.nsquare
    powmod = gmpy2.powmod
    return [powmod(c, int(w), nsquare) for c, w in zip(ciphertexts, scalars, strict=True)]


def mul_scalar_all(public: PublicKey, ciphertexts: Sequence[mpz], scalar: int) -> list[mpz]:
    """Enc(w * a) for one signed scalar w and every ciphertext (one GIL-free gmpy2 call)."""
    return list(gmpy2.powmod_base_list(list(ciphertexts), int(scalar), public.nsquare))


def rerandomize(
    public: PublicKey, ciphertexts: Sequence[mpz], randomizers: RandomizerSource
) -> list[mpz]:
    """The same plaintexts under fresh randomness: c * r^n, one multiplication each."""
    nsquare = public.nsquare
    rn = randomizers(len(ciphertexts))
    return [c * r % nsquare for c, r in zip(ciphertexts, rn, strict=True)]


def pack(public: PublicKey, ciphertexts: Sequence[mpz], layout: SlotLayout) -> list[mpz]:
    """Pack Enc(v_i) into ceil(k / slots) ciphertexts by Horner's rule with offsets.

    Each slot costs ``slot_bits`` squarings mod n^2, so packing k values costs about as
    much as one exponentiation per full ciphertext, and saves B a decryption per value.
    """
    layout.check_fits(public.bits)
    nsquare, n = public.nsquare, public.n
    packed = []
    for batch in layout.batches(len(ciphertexts)):
        acc = horner_pack(nsquare, [ciphertexts[i] for i in batch], None, layout.slot_bits)
        packed.append(acc * (1 + layout.offset_sum(len(batch)) * n) % nsquare)
    return packed


def horner_pack(
    nsquare: mpz, ciphertexts: Sequence[mpz], scales: Sequence[int] | None, slot_bits: int
) -> mpz:
    """prod_k c_k^(scales_k * 2^(slot_bits * k)) mod n^2 (scales None: 1), by Horner's
    rule: one batch of :func:`pack` without its offsets."""
    values = list(ciphertexts)
    if scales is not None:
        values = [gmpy2.powmod(c, d, nsquare) for c, d in zip(values, scales, strict=True)]
    shift = mpz(1) << slot_bits
    acc = values[-1]
    for c in reversed(values[:-1]):
        acc = gmpy2.powmod(acc, shift, nsquare) * c % nsquare
    return acc


def add_packed(
    public: PublicKey, packed: Sequence[mpz], plaintexts: Sequence[int], layout: SlotLayout
) -> list[mpz]:
    """From :func:`pack` output for values a_i, the packing of a_i + m_i for signed
    plaintexts m_i: the m_i packed in the clear, one multiplication per ciphertext."""
    batches = layout.batches(len(plaintexts))
    if len(batches) != len(packed):
        raise ValueError(f"{len(plaintexts)} values need {len(batches)} packed ciphertexts")
    shift, n, nsquare = layout.slot_bits, int(public.n), public.nsquare
    sums = (sum(plaintexts[i] << (shift * k) for k, i in enumerate(batch)) for batch in batches)
    return [c * (1 + total % n * n) % nsquare for c, total in zip(packed, sums, strict=True)]


def decrypt_packed(
    private: PrivateKey, packed: Sequence[mpz], layout: SlotLayout, count: int
) -> list[int]:
    """The ``count`` signed values of packed ciphertexts made by :func:`pack`, bounds checked."""
    batches = layout.batches(count)
    if len(batches) != len(packed):
        raise CiphertextFormatError(
            f"{count} values in slots of {layout.slots} need {len(batches)} ciphertexts, "
            f"got {len(packed)}"
        )
    values: list[int] = []
    for batch, residue in zip(batches, decrypt_raw(private, packed), strict=True):
        values.extend(layout.unpack(int(residue), len(batch)))
    return values


def check_ciphertexts(public: PublicKey, ciphertexts: Iterable[int]) -> None:
    """Refuse any value that is not in Z*_{n^2}: zero, at least n^2, or sharing a factor with n."""
    nsquare, n = public.nsquare, public.n
    for index, c in enumerate(ciphertexts):
        if not 0 < c < nsquare:
            raise CiphertextRangeError(
                f"ciphertext {index} is outside [1, n^2) for key {public.key_id[:16]}; "
                "was it made under another key?"
            )
        if gmpy2.gcd(c, n) != 1:
            raise CiphertextRangeError(f"ciphertext {index} is not invertible mod n^2")


def _same_length(left: Sequence[object], right: Sequence[object]) -> None:
    if len(left) != len(right):
        raise ValueError(f"operands differ in length: {len(left)} and {len(right)}")
