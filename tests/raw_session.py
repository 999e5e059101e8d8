"""A client that writes the wire itself, to send what a correct client never would: a
tampered open, a malformed or out-of-range request, a reused request id, a dropped stream.

It is built from the stub's public parts (the transport, the client session, the
converters), so the tests that use it reach into no client's private members.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import grpc
import numpy as np
import numpy.typing as npt

from ppinfer.protocol.client_session import ClientSession, mask_input
from ppinfer.protocol.session_messages import ServerOffer
from ppinfer.rpc.channel_options import CHANNEL_OPTIONS
from ppinfer.rpc.client_stub import server_error
from ppinfer.rpc.client_transport import StreamTransport
from ppinfer.rpc.session_converters import (
    infer_result_from_msg,
    offer_from_msg,
    open_to_msg,
    opened_from_msg,
)
from ppinfer.rpc.tensor_messages import int64_tensor_to_msg
from ppinfer.rpc.tls import ChannelTls
from ppinfer.v1 import model_service_pb2

OpenMessage = Callable[[ServerOffer, model_service_pb2.OpenSession], model_service_pb2.OpenSession]


def unchanged(
    offer: ServerOffer, message: model_service_pb2.OpenSession
) -> model_service_pb2.OpenSession:
    return message


class RawSession:
    """One session on a stream of its own; ``open_message(offer, message)`` may rewrite the
    open a correct client would send. ``opened`` is False when A refused the open."""

    def __init__(
        self, address: str, tls: ChannelTls, open_message: OpenMessage = unchanged
    ) -> None:
        self.transport = StreamTransport(address, CHANNEL_OPTIONS, tls)
        self._open_message = open_message
        self.session: ClientSession | None = None
        self._seeds: dict[int, bytes] = {}  # every ticket's seed, kept to misuse them

    def __enter__(self) -> Self:
        try:
            info = self.transport.server_info(model_service_pb2.ServerInfoRequest(), 30)
        except grpc.RpcError as error:
            raise server_error(error) from error
        offer = offer_from_msg(info)
        session = ClientSession(offer)
        self.transport.open_stream()
        self.send(
            model_service_pb2.ClientMessage(
                open=self._open_message(offer, open_to_msg(session.open_request))
            )
        )
        answer = self.receive()
        if answer.WhichOneof("kind") == "opened":
            if answer.opened.key_salt:
                session.opened(opened_from_msg(answer.opened))
            self.session = session
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.transport.close()

    @property
    def opened(self) -> ClientSession:
        assert self.session is not None, "the model server did not open the session"
        return self.session

    def send(self, message: model_service_pb2.ClientMessage) -> None:
        self.transport.send(message)

    def send_masked(self, request_id: int, masked: npt.NDArray[np.int64]) -> None:
        """An infer message carrying ``masked`` as the masked input, whatever it is."""
        infer = model_service_pb2.InferRequest(
            request_id=request_id, masked_input=int64_tensor_to_msg(masked)
        )
        self.send(model_service_pb2.ClientMessage(infer=infer))

    def seed(self, request_id: int) -> bytes:
        """The mask seed of ``request_id``'s ticket: held now, or held before (kept)."""
        if request_id not in self._seeds:
            self._seeds[request_id] = self.opened.ticket_seed(request_id)
        return self._seeds[request_id]

    def mask(self, request_id: int, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """``x`` masked as a correct client masks it, under ``request_id``'s ticket (one
        it holds or held: a correct client never uses a ticket twice)."""
        model = self.opened.model
        return mask_input(
            self.seed(request_id), x, model.input_shape, model.input_format, model.mask_bits
        )

    def receive(self, timeout: float = 60) -> model_service_pb2.ServerMessage:
        """A's next message; its status as ServerError when it ended the stream."""
        try:
            return self.transport.receive(timeout)
        except grpc.RpcError as error:
            raise server_error(error) from error

    def result(self, request_id: int) -> npt.NDArray[np.float64]:
        """The logits of ``request_id`` (A's next message must be its result)."""
        message = self.receive()
        assert message.WhichOneof("kind") == "result", message
        return self.opened.result(infer_result_from_msg(message.result), request_id)

    def predict(self, request_id: int, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        self.send_masked(request_id, self.mask(request_id, x))
        return self.result(request_id)

    def drop(self) -> None:
        """Cancel the stream, as a dropped phone connection would."""
        self.transport.end_stream()
