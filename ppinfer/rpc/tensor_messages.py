"""The tensor messages of ppinfer.v1: ciphertext chunks and int64 tensors.

A long ciphertext vector is cut into :class:`ppinfer.v1.tensors_pb2.CiphertextChunk`
messages of at most ``DEFAULT_CHUNK_BYTES`` bytes, far below gRPC's 4 MiB default message
limit, each holding :mod:`ppinfer.encoding.wire_bytes` ciphertexts. Int64 tensors travel
as little-endian two's complement, row-major. Only Python integers and numpy here: the
client uses this module without gmpy2. This module checks lengths and order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from ppinfer.encoding.wire_bytes import decode_ciphertexts, encode_ciphertexts
from ppinfer.errors import ChunkSequenceError, CiphertextFormatError, TensorFormatError
from ppinfer.v1 import tensors_pb2

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "MAX_TENSOR_ELEMENTS",
    "ChunkAssembler",
    "chunk_ciphertexts",
    "int64_tensor_from_msg",
    "int64_tensor_to_msg",
]

#: Bytes of ciphertext data per chunk message: 1 MiB, a quarter of gRPC's default limit.
DEFAULT_CHUNK_BYTES = 1 << 20
#: Largest tensor accepted from the network (elements), so a bad shape cannot exhaust memory.
MAX_TENSOR_ELEMENTS = 1 << 24


def chunk_ciphertexts(
    ciphertexts: Sequence[int], width: int, max_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[tensors_pb2.CiphertextChunk]:
    """Cut a ciphertext vector into chunks of at most ``max_bytes`` data bytes each."""
    per_chunk = max(1, max_bytes // width)
    total = len(ciphertexts)
    starts = range(0, total, per_chunk) if total else range(1)
    for seq, start in enumerate(starts):
        part = ciphertexts[start : start + per_chunk]
        yield tensors_pb2.CiphertextChunk(
            seq=seq,
            last=start + per_chunk >= total,
            count=len(part),
            width=width,
            data=encode_ciphertexts(part, width),
        )


class ChunkAssembler:
    """Reassemble one ciphertext vector from its chunks, refusing gaps, repeats and mixed widths.

    ``max_count`` bounds how many ciphertexts the vector may hold, so a peer cannot make
    the receiver buffer without limit.
    """

    def __init__(self, width: int, max_count: int) -> None:
        self.width = width
        self.max_count = max_count
        self._next_seq = 0
        self._done = False
        self._values: list[int] = []

    @property
    def done(self) -> bool:
        return self._done

    def add(self, chunk: tensors_pb2.CiphertextChunk) -> list[int] | None:
        """Take the next chunk; return the whole vector once the last chunk arrived."""
        if self._done:
            raise ChunkSequenceError("a chunk arrived after the last chunk of its vector")
        if chunk.seq != self._next_seq:
            raise ChunkSequenceError(f"expected chunk {self._next_seq}, got chunk {chunk.seq}")
        if chunk.width != self.width:
            raise CiphertextFormatError(
                f"chunk width {chunk.width} bytes differs from this key's {self.width}"
            )
        if len(self._values) + chunk.count > self.max_count:
            raise CiphertextFormatError(f"vector exceeds its limit of {self.max_count} ciphertexts")
        self._values.extend(decode_ciphertexts(chunk.data, self.width, chunk.count))
        self._next_seq += 1
        if chunk.last:
            self._done = True
            return self._values
        return None


def int64_tensor_to_msg(array: npt.ArrayLike) -> tensors_pb2.Int64Tensor:
    """An int64 tensor message (little-endian, row-major)."""
    values = np.asarray(array)
    if values.dtype != np.int64:
        if not np.issubdtype(values.dtype, np.integer):
            raise TensorFormatError(f"expected an integer tensor, got dtype {values.dtype}")
        values = values.astype(np.int64)
    return tensors_pb2.Int64Tensor(
        shape=list(values.shape), data=np.ascontiguousarray(values, dtype="<i8").tobytes()
    )


def int64_tensor_from_msg(
    message: tensors_pb2.Int64Tensor, max_elements: int = MAX_TENSOR_ELEMENTS
) -> npt.NDArray[np.int64]:
    """The numpy array of an int64 tensor message; shape and byte length must agree."""
    shape = tuple(int(d) for d in message.shape)
    elements = 1
    for dim in shape:
        elements *= dim
        if elements > max_elements:
            raise TensorFormatError(
                f"tensor shape {shape} exceeds the limit of {max_elements} elements"
            )
    if len(message.data) != 8 * elements:
        raise TensorFormatError(
            f"tensor of shape {shape} needs {8 * elements} bytes, got {len(message.data)}"
        )
    return np.frombuffer(message.data, dtype="<i8").astype(np.int64).reshape(shape)
