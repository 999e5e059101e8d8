"""python-paillier stays the reference: our ciphertexts decrypt with phe, and phe's with ours."""

from __future__ import annotations

import phe
from hypothesis import given
from hypothesis import strategies as st

from ppinfer.paillier import PrivateKey, PublicKey, decrypt, encrypt, fresh_randomizers
from ppinfer.paillier.interop import (
    from_phe_ciphertext,
    from_phe_private_key,
    from_phe_public_key,
    to_phe_ciphertext,
    to_phe_private_key,
    to_phe_public_key,
)

Keypair = tuple[PublicKey, PrivateKey]
# phe reads residues as negative only below n/3 of the top: stay within its range.
plaintexts = st.lists(st.integers(-(2**64), 2**64), min_size=1, max_size=8)


@given(plain=plaintexts)
def test_ours_decrypt_with_phe(keypair: Keypair, plain: list[int]) -> None:
    public, private = keypair
    ciphertexts = encrypt(public, plain, lambda k: fresh_randomizers(public, k, private))
    phe_public, phe_private = to_phe_public_key(public), to_phe_private_key(private)
    assert [phe_private.decrypt(to_phe_ciphertext(phe_public, c)) for c in ciphertexts] == plain


@given(plain=plaintexts)
def test_phe_decrypt_with_ours(keypair: Keypair, plain: list[int]) -> None:
    public, private = keypair
    phe_public = to_phe_public_key(public)
    ciphertexts = [from_phe_ciphertext(phe_public.encrypt(m)) for m in plain]
    assert decrypt(private, ciphertexts) == plain


def test_keys_convert_both_ways() -> None:
    phe_public, phe_private = phe.generate_paillier_keypair(n_length=1024)
    public, private = from_phe_public_key(phe_public), from_phe_private_key(phe_private)
    assert int(public.n) == phe_public.n
    assert to_phe_public_key(public) == phe_public
    assert to_phe_private_key(private) == phe_private
    phe_ciphertext = phe_public.encrypt(-31337)
    assert decrypt(private, [from_phe_ciphertext(phe_ciphertext)]) == [-31337]


def test_phe_homomorphic_result_decrypts_with_ours(keypair: Keypair) -> None:
    public, private = keypair
    phe_public = to_phe_public_key(public)
    combined = phe_public.encrypt(1000) * -3 + phe_public.encrypt(17)
    assert decrypt(private, [from_phe_ciphertext(combined)]) == [-2983]
