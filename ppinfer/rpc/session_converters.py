"""One converter pair per message of a two-server session: the plain values of
:mod:`ppinfer.protocol.session_messages` to their ppinfer.v1 message (``x_to_msg``) and
back (``x_from_msg``). tests/rpc/test_converters.py checks every round trip.

The ``_from_msg`` side is where bytes from the network become values: it checks shapes and
lengths, and the parties check meaning.
"""

from __future__ import annotations

import math

from ppinfer.encoding.wire_bytes import decode_signed, encode_signed
from ppinfer.protocol.session_messages import (
    InferRequest,
    InferResult,
    ModelOffer,
    Opened,
    OpenRequest,
    ProgressEvent,
    ServerOffer,
)
from ppinfer.rpc.tensor_messages import int64_tensor_from_msg, int64_tensor_to_msg
from ppinfer.v1 import model_service_pb2, tensors_pb2

__all__ = [
    "infer_request_from_msg",
    "infer_request_to_msg",
    "infer_result_from_msg",
    "infer_result_to_msg",
    "offer_from_msg",
    "offer_to_msg",
    "open_from_msg",
    "open_to_msg",
    "opened_from_msg",
    "opened_to_msg",
    "progress_from_msg",
    "progress_to_msg",
]

_CLIENT_AIDED = {
    False: model_service_pb2.CLIENT_AIDED_DISABLED,
    True: model_service_pb2.CLIENT_AIDED_BENCHMARK_ONLY_TRUSTS_CLIENT_KEY,
}


def offer_to_msg(offer: ServerOffer) -> model_service_pb2.ServerInfo:
    model = offer.model
    return model_service_pb2.ServerInfo(
        model=model_service_pb2.ModelInfo(
            name=model.name,
            input_shape=list(model.input_shape),
            output_shape=[model.outputs],
            input_frac_bits=model.input_frac_bits,
            input_value_bits=model.input_value_bits,
            output_frac_bits=model.output_frac_bits,
            output_modulus_bits=model.output_modulus_bits,
            aided_output_frac_bits=model.aided_output_frac_bits,
            mask_sigma=model.mask_sigma,
            client_activation=model.client_activation,
            layers=model.layers,
        ),
        paillier=tensors_pb2.PaillierPublicKey(
            bits=offer.paillier_bits, n=offer.paillier_n, key_id=offer.paillier_key_id
        ),
        key_server_x25519=offer.key_server_x25519,
        key_id=offer.key_id,
        client_aided=_CLIENT_AIDED[offer.client_aided],
    )


def offer_from_msg(message: model_service_pb2.ServerInfo) -> ServerOffer:
    model = message.model
    return ServerOffer(
        model=ModelOffer(
            name=model.name,
            input_shape=tuple(int(d) for d in model.input_shape),
            outputs=math.prod(int(d) for d in model.output_shape),
            input_frac_bits=model.input_frac_bits,
            input_value_bits=model.input_value_bits,
            output_frac_bits=model.output_frac_bits,
            output_modulus_bits=model.output_modulus_bits,
            aided_output_frac_bits=model.aided_output_frac_bits,
            mask_sigma=model.mask_sigma,
            client_activation=model.client_activation,
            layers=model.layers,
        ),
        paillier_bits=message.paillier.bits,
        paillier_n=bytes(message.paillier.n),
        paillier_key_id=message.paillier.key_id,
        key_server_x25519=bytes(message.key_server_x25519),
        key_id=message.key_id,
        client_aided=message.client_aided != model_service_pb2.CLIENT_AIDED_DISABLED,
    )


def open_to_msg(request: OpenRequest) -> model_service_pb2.OpenSession:
    return model_service_pb2.OpenSession(
        model=request.model,
        client_x25519=request.client_x25519,
        expected_key_id=request.expected_key_id,
        progress=request.progress,
        protocol=request.protocol,
        tickets=request.tickets,
    )


def open_from_msg(message: model_service_pb2.OpenSession) -> OpenRequest:
    return OpenRequest(
        model=message.model,
        client_x25519=bytes(message.client_x25519),
        expected_key_id=message.expected_key_id,
        progress=message.progress,
        protocol=message.protocol,
        tickets=message.tickets or 1,
    )


def opened_to_msg(opened: Opened) -> model_service_pb2.SessionOpened:
    return model_service_pb2.SessionOpened(
        session_id=opened.session_id,
        key_id=opened.key_id,
        key_salt=opened.key_salt,
        tickets=list(opened.tickets),
    )


def opened_from_msg(message: model_service_pb2.SessionOpened) -> Opened:
    tickets = tuple(bytes(ticket) for ticket in message.tickets)
    return Opened(message.session_id, message.key_id, bytes(message.key_salt), tickets)


def infer_request_to_msg(request: InferRequest) -> model_service_pb2.InferRequest:
    return model_service_pb2.InferRequest(
        request_id=request.request_id, masked_input=int64_tensor_to_msg(request.masked_input)
    )


def infer_request_from_msg(message: model_service_pb2.InferRequest) -> InferRequest:
    return InferRequest(message.request_id, int64_tensor_from_msg(message.masked_input))


def infer_result_to_msg(result: InferResult) -> model_service_pb2.InferResult:
    return model_service_pb2.InferResult(
        request_id=result.request_id,
        sealed_output=result.sealed_output,
        output_mask=tensors_pb2.BigIntVector(
            width=result.value_bytes, data=encode_signed(result.output_mask, result.value_bytes)
        ),
        output_permutation=list(result.output_permutation),
        ticket=result.ticket,
    )


def infer_result_from_msg(message: model_service_pb2.InferResult) -> InferResult:
    width = message.output_mask.width
    count = len(message.output_permutation)
    return InferResult(
        request_id=message.request_id,
        sealed_output=bytes(message.sealed_output),
        output_mask=tuple(decode_signed(message.output_mask.data, width, count)),
        value_bytes=width,
        output_permutation=tuple(message.output_permutation),
        ticket=bytes(message.ticket),
    )


def progress_to_msg(event: ProgressEvent) -> model_service_pb2.Progress:
    return model_service_pb2.Progress(
        request_id=event.request_id, layer=event.layer, layers=event.layers
    )


def progress_from_msg(message: model_service_pb2.Progress) -> ProgressEvent:
    return ProgressEvent(message.request_id, message.layer, message.layers)
