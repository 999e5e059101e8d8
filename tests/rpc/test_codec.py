"""Wire codecs: ciphertext vectors, int64 tensors, chunking; malformed bytes are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppinfer.encoding.wire_bytes import decode_ciphertexts, encode_ciphertexts
from ppinfer.errors import ChunkSequenceError, CiphertextFormatError, TensorFormatError
from ppinfer.paillier import PrivateKey, PublicKey, decrypt, encrypt, fresh_randomizers
from ppinfer.rpc.tensor_messages import (
    ChunkAssembler,
    chunk_ciphertexts,
    int64_tensor_from_msg,
    int64_tensor_to_msg,
)
from ppinfer.v1 import tensors_pb2

Keypair = tuple[PublicKey, PrivateKey]
widths = st.integers(1, 64)


@given(width=widths, data=st.data())
def test_ciphertext_bytes_round_trip(width: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, 2 ** (8 * width) - 1), max_size=20))
    encoded = encode_ciphertexts(values, width)
    assert len(encoded) == width * len(values)
    assert decode_ciphertexts(encoded, width, len(values)) == values


def test_real_ciphertexts_survive_the_wire(keypair: Keypair) -> None:
    public, private = keypair
    ciphertexts = encrypt(public, [-5, 0, 2**60], lambda k: fresh_randomizers(public, k, private))
    encoded = encode_ciphertexts(ciphertexts, public.ciphertext_bytes)
    assert len(encoded) == 3 * 2 * public.bits // 8
    decoded = decode_ciphertexts(encoded, public.ciphertext_bytes, 3)
    assert decrypt(private, decoded) == [-5, 0, 2**60]


def test_wrong_lengths_are_refused() -> None:
    with pytest.raises(CiphertextFormatError, match="whole number"):
        decode_ciphertexts(b"\x01" * 10, 4)
    with pytest.raises(CiphertextFormatError, match="expected 3 ciphertexts"):
        decode_ciphertexts(b"\x01" * 8, 4, count=3)
    with pytest.raises(CiphertextFormatError, match="does not fit"):
        encode_ciphertexts([2**32], 4)
    with pytest.raises(CiphertextFormatError):
        decode_ciphertexts(b"", 0)


@given(
    values=st.lists(st.integers(0, 2**64 - 1), max_size=50),
    max_bytes=st.integers(1, 100),
)
def test_chunking_round_trip(values: list[int], max_bytes: int) -> None:
    chunks = list(chunk_ciphertexts(values, 8, max_bytes))
    assert all(len(c.data) <= max(max_bytes, 8) for c in chunks)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assembler = ChunkAssembler(width=8, max_count=len(values))
    results = [
        assembler.add(tensors_pb2.CiphertextChunk.FromString(c.SerializeToString())) for c in chunks
    ]
    assert results[-1] == values
    assert all(r is None for r in results[:-1])


def test_default_chunks_stay_far_below_grpc_limit(keypair_2048: Keypair) -> None:
    public, _ = keypair_2048
    fake = [public.nsquare - i for i in range(5000)]
    chunks = list(chunk_ciphertexts(fake, public.ciphertext_bytes))
    assert len(chunks) > 1
    assert max(c.ByteSize() for c in chunks) < 4 * 1024 * 1024 // 2


def test_chunk_sequence_errors() -> None:
    chunks = list(chunk_ciphertexts(list(range(6)), 4, max_bytes=8))
    out_of_order = ChunkAssembler(width=4, max_count=6)
    with pytest.raises(ChunkSequenceError, match="expected chunk 0"):
        out_of_order.add(chunks[1])
    after_last = ChunkAssembler(width=4, max_count=6)
    for chunk in chunks:
        after_last.add(chunk)
    with pytest.raises(ChunkSequenceError, match="after the last"):
        after_last.add(chunks[0])
    too_many = ChunkAssembler(width=4, max_count=3)
    too_many.add(chunks[0])
    with pytest.raises(CiphertextFormatError, match="limit of 3"):
        too_many.add(chunks[1])
    wrong_width = ChunkAssembler(width=8, max_count=6)
    with pytest.raises(CiphertextFormatError, match="width"):
        wrong_width.add(chunks[0])
    lying_count = tensors_pb2.CiphertextChunk(seq=0, last=True, count=5, width=4, data=b"\0" * 8)
    with pytest.raises(CiphertextFormatError):
        ChunkAssembler(width=4, max_count=6).add(lying_count)


@given(array=hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=4, max_side=6)))
def test_int64_tensor_round_trip(array: np.ndarray) -> None:
    message = tensors_pb2.Int64Tensor.FromString(int64_tensor_to_msg(array).SerializeToString())
    decoded = int64_tensor_from_msg(message)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, array)
    assert len(message.data) == 8 * array.size


def test_int64_tensor_errors() -> None:
    with pytest.raises(TensorFormatError, match="needs 24 bytes"):
        int64_tensor_from_msg(tensors_pb2.Int64Tensor(shape=[3], data=b"\0" * 16))
    with pytest.raises(TensorFormatError, match="exceeds the limit"):
        int64_tensor_from_msg(tensors_pb2.Int64Tensor(shape=[2**20, 2**20], data=b""))
    with pytest.raises(TensorFormatError, match="integer tensor"):
        int64_tensor_to_msg(np.array([1.5]))
