"""Every converter pair gives back what it was given, through serialized bytes (hypothesis).

Each value goes value → message → bytes → message → value, as it crosses a real stream;
a field a converter forgot or mistyped fails here before it fails on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from ppinfer.compiler.activations import FUNCTIONS, Function, StageCall, StageSpec
from ppinfer.encoding.packing import SlotLayout
from ppinfer.errors import KeyMismatchError, PPInferError
from ppinfer.paillier import PublicKey
from ppinfer.protocol.session_messages import (
    InferRequest,
    InferResult,
    ModelOffer,
    Opened,
    OpenRequest,
    ProgressEvent,
    ServerOffer,
)
from ppinfer.rpc import session_converters as convert
from ppinfer.rpc.key_messages import paillier_key_from_msg, paillier_key_to_msg
from ppinfer.rpc.stage_messages import (
    layout_from_msg,
    layout_to_msg,
    signed_from_msg,
    signed_to_msg,
    stage_call_from_msg,
    stage_call_to_msg,
)
from ppinfer.v1 import key_service_pb2, tensors_pb2

T = TypeVar("T")
M = TypeVar("M", bound=Message)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.text(max_size=40)
blobs = st.binary(max_size=64)


def through_bytes(to_msg: Callable[[T], M], from_msg: Callable[[M], Any], value: T) -> Any:
    message = to_msg(value)
    return from_msg(type(message).FromString(message.SerializeToString()))


model_offers = st.builds(
    ModelOffer,
    name=names,
    input_shape=st.lists(st.integers(1, 2**16), min_size=1, max_size=4).map(tuple),
    outputs=st.integers(1, 2**16),
    input_frac_bits=u32,
    input_value_bits=u32,
    output_frac_bits=u32,
    output_modulus_bits=u32,
    aided_output_frac_bits=u32,
    mask_sigma=u32,
    client_activation=st.sampled_from(["", "softmax", "sigmoid"]),
    layers=u32,
)
server_offers = st.builds(
    ServerOffer,
    model=model_offers,
    paillier_bits=u32,
    paillier_n=blobs,
    paillier_key_id=names,
    key_server_x25519=blobs,
    key_id=names,
    client_aided=st.booleans(),
)
open_requests = st.builds(
    OpenRequest,
    model=names,
    client_x25519=blobs,
    expected_key_id=names,
    progress=st.booleans(),
    protocol=u32,
    tickets=st.integers(1, 2**32 - 1),
)


@st.composite
def infer_results(draw: st.DrawFn) -> InferResult:
    width = draw(st.integers(1, 40))
    half = 2 ** (8 * width - 1)
    count = draw(st.integers(0, 20))
    return InferResult(
        request_id=draw(u64),
        sealed_output=draw(blobs),
        output_mask=tuple(
            draw(st.lists(st.integers(-half, half - 1), min_size=count, max_size=count))
        ),
        value_bytes=width,
        output_permutation=tuple(draw(st.permutations(range(count)))),
        ticket=draw(blobs),
    )


@given(server_offers)
def test_server_offer_round_trip(offer: ServerOffer) -> None:
    assert through_bytes(convert.offer_to_msg, convert.offer_from_msg, offer) == offer


@given(open_requests)
def test_open_request_round_trip(request: OpenRequest) -> None:
    assert through_bytes(convert.open_to_msg, convert.open_from_msg, request) == request


@given(
    st.builds(
        Opened,
        session_id=names,
        key_id=names,
        key_salt=blobs,
        tickets=st.lists(blobs, max_size=8).map(tuple),
    )
)
def test_opened_round_trip(opened: Opened) -> None:
    assert through_bytes(convert.opened_to_msg, convert.opened_from_msg, opened) == opened


@given(
    u64,
    st.lists(st.integers(1, 5), min_size=1, max_size=3).flatmap(
        lambda shape: st.lists(
            st.integers(-(2**63), 2**63 - 1),
            min_size=int(np.prod(shape)),
            max_size=int(np.prod(shape)),
        ).map(lambda values: np.array(values, dtype=np.int64).reshape(shape))
    ),
)
def test_infer_request_round_trip(request_id: int, masked: np.ndarray) -> None:
    back = through_bytes(
        convert.infer_request_to_msg,
        convert.infer_request_from_msg,
        InferRequest(request_id, masked),
    )
    assert back.request_id == request_id
    assert back.masked_input.dtype == np.int64
    np.testing.assert_array_equal(back.masked_input, masked)


@given(infer_results())
def test_infer_result_round_trip(result: InferResult) -> None:
    assert through_bytes(convert.infer_result_to_msg, convert.infer_result_from_msg, result) == (
        result
    )


@given(st.builds(ProgressEvent, request_id=u64, layer=u32, layers=u32))
def test_progress_round_trip(event: ProgressEvent) -> None:
    assert through_bytes(convert.progress_to_msg, convert.progress_from_msg, event) == event


@pytest.mark.parametrize("bits", [256, 1024])
def test_paillier_key_round_trip_and_refusals(bits: int, keypair_512: Any) -> None:
    import gmpy2

    p = gmpy2.next_prime(2 ** (bits // 2 - 1) + 12345)
    q = gmpy2.next_prime(p + 2**20)
    public = PublicKey(int(p * q))
    back = through_bytes(paillier_key_to_msg, lambda m: paillier_key_from_msg(m, "test"), public)
    assert (back.n, back.bits, back.key_id) == (public.n, public.bits, public.key_id)
    wrong_id = paillier_key_to_msg(public)
    wrong_id.key_id = keypair_512[0].key_id
    with pytest.raises(KeyMismatchError, match="stated size or id"):
        paillier_key_from_msg(wrong_id, "test")
    with pytest.raises(PPInferError, match=f"must have 2048 to 4096 bits, got {public.bits}"):
        paillier_key_from_msg(paillier_key_to_msg(public), "test", range(2048, 4097))


layouts = st.builds(SlotLayout, value_bits=st.integers(1, 4000), slots=st.integers(1, 64))


@given(layouts)
def test_slot_layout_round_trip(layout: SlotLayout) -> None:
    assert through_bytes(layout_to_msg, layout_from_msg, layout) == layout


def test_a_slot_layout_with_the_wrong_slot_width_is_refused() -> None:
    message = layout_to_msg(SlotLayout(40, 3))
    message.slot_bits += 1
    with pytest.raises(PPInferError, match="-bit slots"):
        layout_from_msg(message)


@given(st.lists(st.integers(-(2**2000), 2**2000), max_size=30))
def test_signed_vector_round_trip(values: list[int]) -> None:
    message = tensors_pb2.BigIntVector.FromString(signed_to_msg(values).SerializeToString())
    assert signed_from_msg(message, len(values)) == values


functions = st.sampled_from(sorted(FUNCTIONS)).map(
    lambda name: Function(name, tuple(0.5 for _ in FUNCTIONS[name].parameter_names))
)


@given(
    st.builds(
        StageCall,
        stage=st.builds(
            StageSpec,
            before=st.lists(functions, max_size=3).map(tuple),
            group=st.integers(1, 16),
            after=st.lists(functions, max_size=2).map(tuple),
        ),
        layout=layouts,
        count=u32,
        in_frac=u32,
        out_frac=u32,
    ),
    names,
    u64,
    u32,
)
def test_stage_call_round_trip(call: StageCall, session: str, request: int, stage: int) -> None:
    chunk = tensors_pb2.CiphertextChunk()
    message = key_service_pb2.ActivationBatch.FromString(
        stage_call_to_msg(session, request, call, chunk, stage).SerializeToString()
    )
    assert stage_call_from_msg(message) == call
    assert (message.session_id, message.request_id, message.stage_index) == (
        session,
        request,
        stage,
    )
