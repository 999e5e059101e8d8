"""Slot packing: layout from declared bounds, plaintext and homomorphic pack/unpack, overflow."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppinfer.encoding.packing import SlotLayout
from ppinfer.errors import SlotOverflowError
from ppinfer.paillier import (
    PrivateKey,
    PublicKey,
    decrypt_packed,
    decrypt_raw,
    encrypt,
    fresh_randomizers,
    pack,
)

Keypair = tuple[PublicKey, PrivateKey]


@given(value_bits=st.integers(1, 200), key_bits=st.integers(64, 4096))
def test_layout_fits_the_key(value_bits: int, key_bits: int) -> None:
    if value_bits + 2 > key_bits - 1:
        with pytest.raises(SlotOverflowError):
            SlotLayout.for_key(value_bits, key_bits)
        return
    layout = SlotLayout.for_key(value_bits, key_bits)
    assert layout.slot_bits == value_bits + 2
    assert layout.packed_bits <= key_bits - 1 < layout.packed_bits + layout.slot_bits
    layout.check_fits(key_bits)


def test_2048_bit_key_holds_32_slots_of_48_bit_values() -> None:
    layout = SlotLayout.for_key(48, 2048)
    assert layout.slots == 40
    assert SlotLayout.for_key(48, 2048, max_slots=32).slots == 32
    with pytest.raises(SlotOverflowError, match="use fewer slots"):
        SlotLayout(value_bits=48, slots=41).check_fits(2048)


@st.composite
def layouts_and_values(draw: st.DrawFn) -> tuple[SlotLayout, list[int]]:
    layout = SlotLayout(value_bits=draw(st.integers(1, 64)), slots=draw(st.integers(1, 16)))
    bound = 2**layout.value_bits - 1
    values = draw(st.lists(st.integers(-bound, bound), min_size=1, max_size=layout.slots))
    return layout, values


@given(case=layouts_and_values())
def test_plain_pack_unpack_round_trip(case: tuple[SlotLayout, list[int]]) -> None:
    layout, values = case
    packed = layout.pack_plain(values)
    assert 0 <= packed < 2**layout.packed_bits
    assert layout.unpack(packed, len(values)) == values


@given(case=layouts_and_values(), position=st.integers(0, 15), sign=st.sampled_from([-1, 1]))
def test_a_value_beyond_its_bound_is_detected(
    case: tuple[SlotLayout, list[int]], position: int, sign: int
) -> None:
    layout, values = case
    position %= len(values)
    # Build the plaintext a careless packer would make: one value past 2^value_bits.
    excess = sign * (2**layout.value_bits + position % 3)
    packed = sum(
        ((excess if i == position else v) + layout.offset) << (layout.slot_bits * i)
        for i, v in enumerate(values)
    )
    with pytest.raises(SlotOverflowError):
        layout.unpack(packed, len(values))
    with pytest.raises(SlotOverflowError):
        layout.pack_plain([excess])


@settings(max_examples=25)
@given(data=st.data())
def test_homomorphic_pack_matches_plain_pack(keypair: Keypair, data: st.DataObject) -> None:
    public, private = keypair
    value_bits = data.draw(st.integers(8, 60))
    layout = SlotLayout.for_key(value_bits, public.bits)
    bound = 2**value_bits - 1
    count = data.draw(st.integers(1, layout.slots + 3))  # one full batch and a partial one
    values = data.draw(st.lists(st.integers(-bound, bound), min_size=count, max_size=count))
    ciphertexts = encrypt(public, values, lambda k: fresh_randomizers(public, k, private))
    packed = pack(public, ciphertexts, layout)
    assert len(packed) == len(layout.batches(count))
    assert decrypt_packed(private, packed, layout, count) == values
    first = layout.batches(count)[0]
    assert decrypt_raw(private, packed[:1]) == [layout.pack_plain(values[: len(first)])]


def test_homomorphic_overflow_is_refused_not_wrapped(keypair_512: Keypair) -> None:
    public, private = keypair_512
    layout = SlotLayout.for_key(16, public.bits, max_slots=4)
    ciphertexts = encrypt(public, [1, 2**16 + 5, 3], lambda k: fresh_randomizers(public, k))
    with pytest.raises(SlotOverflowError):
        decrypt_packed(private, pack(public, ciphertexts, layout), layout, 3)
