"""Conversions between A↔B messages and the core's types, one place for both sides."""

from __future__ import annotations

import math

from ppinfer.compiler.activations import Function, StageCall, StageSpec
from ppinfer.encoding.packing import SlotLayout
from ppinfer.encoding.wire_bytes import decode_signed, encode_signed
from ppinfer.errors import PPInferError
from ppinfer.v1 import key_service_pb2, tensors_pb2

__all__ = [
    "layout_from_msg",
    "layout_to_msg",
    "signed_from_msg",
    "signed_to_msg",
    "stage_call_from_msg",
    "stage_call_to_msg",
]

#: Widest signed value in a BigIntVector (a 2048-bit key's plaintexts fit in 257 bytes).
MAX_VALUE_BYTES = 1024


def layout_to_msg(layout: SlotLayout) -> tensors_pb2.SlotLayout:
    return tensors_pb2.SlotLayout(
        value_bits=layout.value_bits, slot_bits=layout.slot_bits, slots=layout.slots
    )


def layout_from_msg(message: tensors_pb2.SlotLayout) -> SlotLayout:
    try:
        layout = SlotLayout(value_bits=message.value_bits, slots=message.slots)
    except ValueError as error:
        raise PPInferError(f"bad slot layout: {error}") from error
    if message.slot_bits != layout.slot_bits:
        raise PPInferError(
            f"slot layout says {message.slot_bits}-bit slots; {layout.value_bits}-bit values "
            f"use {layout.slot_bits}"
        )
    return layout


def _function_messages(functions: tuple[Function, ...]) -> list[key_service_pb2.Function]:
    return [key_service_pb2.Function(name=f.name, parameters=f.parameters) for f in functions]


def _functions(messages: object) -> tuple[Function, ...]:
    functions = tuple(
        Function(m.name, tuple(float(p) for p in m.parameters))
        for m in messages  # type: ignore[attr-defined]
    )
    if any(not math.isfinite(p) for f in functions for p in f.parameters):
        raise PPInferError("function parameters must be finite")
    return functions


def signed_to_msg(values: list[int]) -> tensors_pb2.BigIntVector:
    """Signed integers at the narrowest common width (two's complement, big-endian)."""
    width = (max((v.bit_length() for v in values), default=0) + 1 + 7) // 8  # sign bit
    return tensors_pb2.BigIntVector(width=width, data=encode_signed(values, width))


def signed_from_msg(vector: tensors_pb2.BigIntVector, count: int) -> list[int]:
    """The ``count`` integers of a :func:`signed_to_msg`, its width and length checked."""
    if not 1 <= vector.width <= MAX_VALUE_BYTES:
        raise PPInferError(f"value width must be 1 to {MAX_VALUE_BYTES} bytes, got {vector.width}")
    return decode_signed(vector.data, vector.width, count)


def stage_call_to_msg(
    session_id: str,
    request_id: int,
    call: StageCall,
    chunk: tensors_pb2.CiphertextChunk | None,
    stage_index: int = 0,
) -> key_service_pb2.ActivationBatch:
    """One chunk of the ActivationBatch that asks for ``call``, as stage ``stage_index`` of
    the request (B's answer mask; the client-aided client has none). Without ``chunk``
    (two-server mode) the caller sets ``values``."""
    return key_service_pb2.ActivationBatch(
        session_id=session_id,
        request_id=request_id,
        stage_index=stage_index,
        functions=_function_messages(call.stage.before),
        window=call.stage.group,
        after=_function_messages(call.stage.after),
        layout=layout_to_msg(call.layout),
        value_count=call.count,
        in_frac_bits=call.in_frac,
        out_frac_bits=call.out_frac,
        chunk=chunk,
    )


def stage_call_from_msg(batch: key_service_pb2.ActivationBatch) -> StageCall:
    """The StageCall an ActivationBatch asks for (B checks it); window 0 means 1."""
    return StageCall(
        StageSpec(_functions(batch.functions), batch.window or 1, _functions(batch.after)),
        layout_from_msg(batch.layout),
        batch.value_count,
        batch.in_frac_bits,
        batch.out_frac_bits,
    )
