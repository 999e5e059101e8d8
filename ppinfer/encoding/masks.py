"""The distributions of the protocol's per-inference randomness: masks, permutations
and multipliers.

Model server A draws them for every request; the plaintext simulator draws the same
distributions so that it predicts A exactly. Every draw comes from the OS CSPRNG
(``os.urandom``); nothing is seeded, so tests make their data deterministic, never these.

Draws are made in bulk: one read of the CSPRNG per call, turned into exactly uniform
integers by masking (for powers of two) or by rejection (otherwise), never by a modulo
that would favour small values. A request draws hundreds of thousands of values on a
convolutional model, and one system call each was most of the simulator's time.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["additive_masks", "mask_multipliers", "multiplier_noise", "random_permutation"]

#: Bounds up to this use the vectorized path (64-bit words, rejection below a multiple).
_WORD_LIMIT = 1 << 62


def _below_each(bounds: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """One integer uniform in [0, b) for each bound 1 <= b < 2^62, by rejection: a 64-bit
    word w is kept when w < floor(2^64 / b)·b (all but a fraction b/2^64 of words), and
    w mod b is then exactly uniform."""
    out = np.empty(bounds.shape, dtype=np.uint64)
    pending = np.arange(bounds.size)
    # 2^64 - (2^64 mod b) computed in uint64 without overflow: -b mod b == 2^64 mod b
    limits = np.uint64(0) - (np.uint64(0) - bounds) % bounds  # 0 stands for 2^64 (b a power of 2)
    while pending.size:
        words = np.frombuffer(os.urandom(8 * pending.size), dtype=np.uint64)
        wanted = limits[pending]
        keep = (wanted == 0) | (words < wanted)
        chosen = pending[keep]
        out[chosen] = words[keep] % bounds[chosen]
        pending = pending[~keep]
    return out


def _uniform_below(bounds: Sequence[int]) -> list[int]:
    """Uniform integers in [0, b) for each b >= 1 (wide bounds one by one)."""
    if not bounds:
        return []
    if max(bounds) < _WORD_LIMIT:
        return [int(v) for v in _below_each(np.asarray(bounds, dtype=np.uint64))]
    return [secrets.randbelow(b) for b in bounds]


def mask_multipliers(count: int, min_bits: int, spread_bits: int) -> list[int]:
    """Positive multiplicative masks d, log-uniform over [2^min_bits, 2^(min_bits+spread_bits)).

    The bit length is uniform over the spread, then d is uniform among numbers of that
    length, so magnitudes are hidden up to a factor 2^spread_bits.
    """
    lengths = [min_bits + 1 + v for v in _uniform_below([spread_bits] * count)]
    low = _uniform_below([1 << (length - 1) for length in lengths])
    return [(1 << (length - 1)) + v for length, v in zip(lengths, low, strict=True)]


def multiplier_noise(multipliers: Sequence[int]) -> list[int]:
    """e uniform in [0, d) for each multiplicative mask d: B is sent d·z + e, not d·z.

    d·z alone is an exact multiple of d, so its divisors (and, over a window sharing one
    d, the gcd of its values) give d, and with it z, away. d·z + e is any integer: every d
    in range is consistent with it. Since z is an integer and 0 <= e < d, d·z + e keeps
    the sign of z (z >= 0 exactly when d·z + e >= 0) and the order of distinct values of a
    window, and equals d·(z + e/d): a positively homogeneous stage evaluates exactly on an
    input off by less than one unit of z's scale (ppinfer.compiler.bounds.analyze bounds it)."""
    return _uniform_below(multipliers)


def random_permutation(count: int) -> list[int]:
    """A uniform permutation of range(count) (Fisher-Yates on the OS CSPRNG)."""
    order = list(range(count))
    swaps = _uniform_below(list(range(count, 1, -1)))  # j uniform in [0, i] for i = count-1 .. 1
    for i, j in zip(range(count - 1, 0, -1), swaps, strict=True):
        order[i], order[j] = order[j], order[i]
    return order


def additive_masks(count: int, bits: int) -> list[int]:
    """Statistical masks s uniform in [0, 2^bits)."""
    width = (bits + 7) // 8
    raw = os.urandom(width * count)
    excess = width * 8 - bits
    return [int.from_bytes(raw[i * width : (i + 1) * width], "big") >> excess for i in range(count)]
