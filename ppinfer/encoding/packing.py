"""Slot packing: many bounded signed values in one Paillier plaintext.

Each value v with |v| < 2^value_bits is shifted by the offset 2^value_bits into
[0, 2^(value_bits+1)) and placed in a slot of ``value_bits + 2`` bits; the top bit of
each slot is a guard that stays zero while every value respects its bound. Slot 0 is
the least significant (a field of 0 would mean v = -2^value_bits, also refused):

    P = sum_i (v_i + offset) * 2^(slot_bits * i)

so Enc(P) follows from Enc(v_i) by Horner's rule (see ppinfer.paillier.ops.pack). A
value beyond its bound lands in the guard bit (or borrows from the next slot, which
also shows there) and unpacking refuses the batch instead of returning wrong values.
The plaintext math here is pure Python; it needs no key material.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ppinfer.errors import SlotOverflowError

__all__ = ["GUARD_BITS", "SealCall", "SlotLayout"]

#: One bit above the shifted value, which must stay zero (see the module docstring).
GUARD_BITS = 1


@dataclass(frozen=True)
class SlotLayout:
    """Where values go in a packed plaintext; build it with :meth:`for_key`."""

    value_bits: int
    slots: int

    def __post_init__(self) -> None:
        if self.value_bits < 1 or self.slots < 1:
            raise ValueError(
                f"a layout needs value_bits >= 1 and slots >= 1, "
                f"got {self.value_bits}, {self.slots}"
            )

    @classmethod
    def for_key(cls, value_bits: int, key_bits: int, max_slots: int | None = None) -> SlotLayout:
        """As many slots as a key of ``key_bits`` bits holds for values below 2^value_bits.

        The packed plaintext must stay below n, so at most ``key_bits - 1`` bits are used.
        """
        slot_bits = value_bits + 1 + GUARD_BITS
        capacity = (key_bits - 1) // slot_bits
        if capacity < 1:
            raise SlotOverflowError(
                f"values of {value_bits} bits do not fit one slot of a {key_bits}-bit key"
            )
        if max_slots is not None:
            capacity = min(capacity, max_slots)
        return cls(value_bits=value_bits, slots=capacity)

    @property
    def slot_bits(self) -> int:
        """Width of one slot: the shifted value plus the guard bit."""
        return self.value_bits + 1 + GUARD_BITS

    @property
    def offset(self) -> int:
        """Added to every value so that each slot holds a non-negative number."""
        return 1 << self.value_bits

    @property
    def packed_bits(self) -> int:
        """Bits used by a full packed plaintext."""
        return self.slot_bits * self.slots

    def check_fits(self, key_bits: int) -> None:
        """Refuse a layout whose packed plaintext could reach n."""
        if self.packed_bits > key_bits - 1:
            raise SlotOverflowError(
                f"{self.slots} slots of {self.slot_bits} bits need {self.packed_bits} bits, "
                f"but a {key_bits}-bit key holds {key_bits - 1}; use fewer slots"
            )

    def batches(self, count: int) -> list[range]:
        """Index ranges of ``count`` values split into packed ciphertexts."""
        return [
            range(start, min(start + self.slots, count)) for start in range(0, count, self.slots)
        ]

    def offset_sum(self, filled: int) -> int:
        """The total offset of a plaintext with ``filled`` slots: sum_i offset * 2^(slot_bits*i)."""
        return sum(self.offset << (self.slot_bits * i) for i in range(filled))

    def pack_plain(self, values: Sequence[int]) -> int:
        """The packed plaintext of at most ``slots`` values (reference and tests)."""
        self._check_count(len(values))
        limit = self.offset
        packed = 0
        for i, value in enumerate(values):
            if not -limit < value < limit:
                raise SlotOverflowError(
                    f"value {value} at position {i} exceeds the declared bound 2^{self.value_bits}"
                )
            packed += (value + self.offset) << (self.slot_bits * i)
        return packed

    def unpack(self, packed: int, filled: int) -> list[int]:
        """The ``filled`` signed values of a decrypted packed plaintext, bounds checked."""
        self._check_count(filled)
        if packed < 0 or packed >> (self.slot_bits * filled):
            raise SlotOverflowError(
                "packed plaintext is wider than its slots: a value exceeded its declared bound"
            )
        mask = (1 << self.slot_bits) - 1
        shifted_limit = 1 << (self.value_bits + 1)
        values = []
        for i in range(filled):
            field = (packed >> (self.slot_bits * i)) & mask
            # Valid fields are 1 .. 2^(value_bits+1) - 1; 0 means v = -2^value_bits.
            if not 0 < field < shifted_limit:
                raise SlotOverflowError(
                    f"slot {i} is outside its bound: "
                    f"a value reached 2^{self.value_bits} in magnitude"
                )
            values.append(field - self.offset)
        return values

    def _check_count(self, count: int) -> None:
        if not 0 < count <= self.slots:
            raise ValueError(f"a packed plaintext holds 1 to {self.slots} values, got {count}")


@dataclass(frozen=True)
class SealCall:
    """What A asks B to seal: ``count`` values v packed by ``layout``, each sealed as
    floor(v / 2^shift) mod 2^modulus_bits in a signed integer of ``value_bytes`` bytes."""

    layout: SlotLayout
    count: int
    value_bytes: int
    shift: int
    modulus_bits: int
