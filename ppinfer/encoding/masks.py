"""The distributions of the protocol's per-inference randomness: masks, permutations
and multipliers.

Model server A draws them for every request; the plaintext simulator draws the same
distributions so that it predicts A exactly. Every draw comes from the OS CSPRNG
(``secrets``); nothing is seeded, so tests make their data deterministic, never these.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

__all__ = ["additive_masks", "mask_multipliers", "multiplier_noise", "random_permutation"]


def mask_multipliers(count: int, min_bits: int, spread_bits: int) -> list[int]:
    """Positive multiplicative masks d, log-uniform over [2^min_bits, 2^(min_bits+spread_bits)).

    The bit length is uniform over the spread, then d is uniform among numbers of that
    length, so magnitudes are hidden up to a factor 2^spread_bits.
    """
    masks = []
    for _ in range(count):
        length = min_bits + 1 + secrets.randbelow(spread_bits)
        masks.append((1 << (length - 1)) + secrets.randbelow(1 << (length - 1)))
    return masks


def multiplier_noise(multipliers: Sequence[int]) -> list[int]:
    """e uniform in [0, d) for each multiplicative mask d: B is sent d·z + e, not d·z.

    d·z alone is an exact multiple of d, so its divisors (and, over a window sharing one
    d, the gcd of its values) give d, and with it z, away. d·z + e is any integer: every d
    in range is consistent with it. Since z is an integer and 0 <= e < d, d·z + e keeps
    the sign of z (z >= 0 exactly when d·z + e >= 0) and the order of distinct values of a
    window, and equals d·(z + e/d): a positively homogeneous stage evaluates exactly on an
    input off by less than one unit of z's scale (ppinfer.compiler.bounds.analyze bounds it)."""
    return [secrets.randbelow(d) for d in multipliers]


def random_permutation(count: int) -> list[int]:
    """A uniform permutation of range(count) (Fisher-Yates on the OS CSPRNG)."""
    order = list(range(count))
    for i in range(count - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def additive_masks(count: int, bits: int) -> list[int]:
    """Statistical masks s uniform in [0, 2^bits)."""
    return [secrets.randbits(bits) for _ in range(count)]
