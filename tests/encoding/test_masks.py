"""The protocol's random draws: in range, and uniform where they claim to be.

Each frequency test compares counts against the uniform expectation with a bound of six
standard deviations: a correct draw fails it with probability below 1e-8, a modulo bias
or an off-by-one in a range fails it every time.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from ppinfer.encoding.masks import (
    additive_masks,
    mask_multipliers,
    multiplier_noise,
    random_permutation,
)


def _assert_uniform(counts: Counter[int], outcomes: list[int], draws: int) -> None:
    assert set(counts) <= set(outcomes), sorted(set(counts) - set(outcomes))[:5]
    p = 1 / len(outcomes)
    spread = 6 * math.sqrt(draws * p * (1 - p))
    for outcome in outcomes:
        assert abs(counts[outcome] - draws * p) <= spread, (outcome, counts[outcome], draws * p)


@pytest.mark.parametrize("bound", [1, 2, 3, 7, 10, 255, 256, 257])
def test_noise_is_uniform_below_each_multiplier(bound: int) -> None:
    draws = 20_000
    _assert_uniform(Counter(multiplier_noise([bound] * draws)), list(range(bound)), draws)


def test_noise_below_wide_and_mixed_multipliers_stays_in_range() -> None:
    bounds = [1, 2**61 + 1, 2**62 + 3, 2**100, 5] * 200
    values = multiplier_noise(bounds)
    assert all(0 <= v < b for v, b in zip(values, bounds, strict=True))
    top = [v for v, b in zip(values, bounds, strict=True) if b == 2**61 + 1]
    assert sum(v >= 2**60 for v in top) > 50  # the upper half is reached


def test_multipliers_are_log_uniform_over_the_spread() -> None:
    draws, min_bits, spread = 16_000, 8, 8
    masks = mask_multipliers(draws, min_bits, spread)
    assert all(2**min_bits <= d < 2 ** (min_bits + spread) for d in masks)
    lengths = Counter(d.bit_length() for d in masks)
    _assert_uniform(lengths, list(range(min_bits + 1, min_bits + spread + 1)), draws)
    low = Counter(d & 3 for d in masks)  # within each length, the low bits are uniform
    _assert_uniform(low, [0, 1, 2, 3], draws)


def test_permutations_are_uniform() -> None:
    draws = 24_000
    seen = Counter(tuple(random_permutation(4)) for _ in range(draws))
    outcomes = list(itertools.permutations(range(4)))
    index = {p: i for i, p in enumerate(outcomes)}
    _assert_uniform(Counter({index[p]: c for p, c in seen.items()}), list(range(24)), draws)
    assert random_permutation(0) == [] and random_permutation(1) == [0]


@pytest.mark.parametrize("bits", [1, 13, 64, 137])
def test_additive_masks_cover_their_range_uniformly(bits: int) -> None:
    draws = 8_000
    masks = additive_masks(draws, bits)
    assert all(0 <= s < 2**bits for s in masks)
    _assert_uniform(Counter(s >> (bits - 1) for s in masks), [0, 1], draws)  # the top bit
    _assert_uniform(Counter(s & 1 for s in masks), [0, 1], draws)  # the bottom bit
    assert len(set(additive_masks(50, bits))) > (1 if bits < 8 else 45)
