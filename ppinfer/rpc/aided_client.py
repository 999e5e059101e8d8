"""The conventional client-aided baseline (PROTOCOL.md section 9), kept for comparison.

    with AidedClient("localhost:50051", key_bits=2048) as client:
        logits = client.predict(x)

The client holds its own Paillier key pair. Per inference it encrypts every input value,
answers every activation stage itself (decrypt the packed values A sends, apply the
functions, encrypt one fresh ciphertext per result) and decrypts the packed output.
This is the cost the two-server protocol removes from the client; ``ppinfer bench
latency`` measures both side by side. Unlike :class:`ppinfer.client.Client`, it needs
gmpy2 (``ppinfer[server]``): it is not the lightweight stub.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.errors import ModeDisabledError, PPInferError, ProtocolOrderError
from ppinfer.paillier import PrivateKey, PublicKey, encrypt, fresh_randomizers, generate_keypair
from ppinfer.protocol.client_session import ModelDescription, describe
from ppinfer.protocol.revision import PROTOCOL_REVISION
from ppinfer.protocol.session_messages import ServerOffer
from ppinfer.protocol.stage_answer import answer_stage, check_stage, decrypt_values
from ppinfer.rpc.client_stub import Client, ProgressCallback
from ppinfer.rpc.key_messages import paillier_key_to_msg
from ppinfer.rpc.stage_messages import layout_from_msg, stage_call_from_msg
from ppinfer.rpc.tensor_messages import ChunkAssembler, chunk_ciphertexts
from ppinfer.rpc.tls import ChannelTls
from ppinfer.v1 import key_service_pb2, model_service_pb2, tensors_pb2

__all__ = ["AidedClient"]


class AidedClient(Client):
    """A client-aided session with a model server: the client's own key, one inference at a time."""

    def __init__(
        self,
        address: str,
        model: str = "",
        key_bits: int = 2048,
        keypair: tuple[PublicKey, PrivateKey] | None = None,
        timeout: float = 120.0,
        on_progress: ProgressCallback | None = None,
        tls: ChannelTls | None = None,
        insecure: bool = False,
        on_keygen: Callable[[int], None] | None = None,
    ) -> None:
        """Without ``keypair``, a ``key_bits`` key is made once the model server has said it
        takes client-aided sessions (``on_keygen(bits)`` hears when)."""
        super().__init__(
            address, model=model, timeout=timeout, max_in_flight=1, on_progress=on_progress,
            tls=tls, insecure=insecure,
        )  # fmt: skip
        self._keypair = keypair
        self._key_bits = key_bits
        self._on_keygen = on_keygen
        self._request_ids = itertools.count(1)

    @property
    def public(self) -> PublicKey:
        return self._own_keypair()[0]

    @property
    def private(self) -> PrivateKey:
        return self._own_keypair()[1]

    def _own_keypair(self) -> tuple[PublicKey, PrivateKey]:
        if self._keypair is None:
            if self._on_keygen is not None:
                self._on_keygen(self._key_bits)
            self._keypair = generate_keypair(self._key_bits)
        return self._keypair

    def _randomizers(self, count: int) -> list[mpz]:
        # The client knows p and q, so its encryptions use CRT: the fairest baseline.
        return fresh_randomizers(self.public, count, self.private)

    def _begin(self, offer: ServerOffer) -> None:
        """Open with the client's own Paillier key, once A said it takes such sessions."""
        if not offer.client_aided:
            raise ModeDisabledError(
                "the model server does not accept client-aided sessions (an operator enables "
                "them with --allow-client-aided, for benchmarking only)"
            )
        self.model = describe(offer, None)
        self._open_stream()
        self._send(model_service_pb2.ClientMessage(open=self.open_message(offer)))
        self._opened()
        self._request_ids = itertools.count(1)

    def open_message(self, offer: ServerOffer) -> model_service_pb2.OpenSession:
        """The open of a client-aided session of ``offer``'s model, under this client's key."""
        return model_service_pb2.OpenSession(
            model=offer.model.name,
            client_paillier=paillier_key_to_msg(self.public),
            progress=self.on_progress is not None,
            protocol=PROTOCOL_REVISION,
        )

    def _require_model(self) -> ModelDescription:
        if self.model is None or not self._streaming:
            raise ProtocolOrderError("the client is not open: use it as a context manager")
        return self.model

    def infer_message(self, request_id: int, x: npt.ArrayLike) -> model_service_pb2.ClientMessage:
        """The request carrying Enc(x^) under this client's key, for the model it opened."""
        model = self.model
        if model is None:
            raise ProtocolOrderError("the client has no model yet: open it first")
        values = np.asarray(x, dtype=np.float64)
        if values.shape != model.input_shape:
            raise PPInferError(
                f"input shape {values.shape} does not match the model's {model.input_shape}"
            )
        encoded = [int(v) for v in model.input_format.encode(values).ravel()]
        ciphertexts = encrypt(self.public, encoded, self._randomizers)
        width = self.public.ciphertext_bytes
        [chunk] = chunk_ciphertexts(ciphertexts, width, max_bytes=len(ciphertexts) * width)
        return model_service_pb2.ClientMessage(
            infer=model_service_pb2.InferRequest(request_id=request_id, encrypted_input=chunk)
        )

    def _submit(self, x: npt.ArrayLike) -> int:
        self._require_model()
        started = time.thread_time()
        request_id = next(self._request_ids)
        message = self.infer_message(request_id, x)
        self.stats.cpu_seconds += time.thread_time() - started
        self._send(message)
        self._in_flight += 1
        return request_id

    def _result(self, request_id: int) -> npt.NDArray[np.float64]:
        model = self._require_model()
        batches: list[key_service_pb2.ActivationBatch] = []
        while True:
            message = self._receive()
            kind = message.WhichOneof("kind")
            if kind == "activation":
                batches.append(message.activation)
                if message.activation.chunk.last:
                    self._answer(request_id, batches)
                    batches = []
            elif kind == "result":
                break
            else:
                self._handle_progress(message)
        self._in_flight -= 1
        result = message.result
        if result.request_id != request_id:
            raise ProtocolOrderError(f"expected result {request_id}, got {result.request_id}")
        started = time.thread_time()
        layout = layout_from_msg(result.output_layout)
        packed = self._assemble([result.encrypted_output], len(layout.batches(model.outputs)))
        values = decrypt_values(self.private, packed, layout, model.outputs)
        logits = np.array(values, dtype=np.float64) / 2.0**model.aided_output_frac_bits
        self.stats.cpu_seconds += time.thread_time() - started
        self.stats.inferences += 1
        return logits

    def _answer(self, request_id: int, batches: list[key_service_pb2.ActivationBatch]) -> None:
        """Do what B does for one stage, with the client's own key, and send the results."""
        started = time.thread_time()
        first = batches[0]
        if first.request_id != request_id:
            raise ProtocolOrderError(f"stage for request {first.request_id}, not {request_id}")
        call = stage_call_from_msg(first)
        check_stage(call)
        packed = self._assemble([b.chunk for b in batches], len(call.layout.batches(call.count)))
        values = decrypt_values(self.private, packed, call.layout, call.count)
        results = answer_stage(self.private, call, values, self._randomizers)
        replies = [
            model_service_pb2.ClientMessage(
                activated=model_service_pb2.ActivationReply(request_id=request_id, chunk=chunk)
            )
            for chunk in chunk_ciphertexts(results, self.public.ciphertext_bytes)
        ]
        self.stats.cpu_seconds += time.thread_time() - started
        for reply in replies:
            self._send(reply)

    def _assemble(self, chunks: list[tensors_pb2.CiphertextChunk], max_count: int) -> list[int]:
        assembler = ChunkAssembler(self.public.ciphertext_bytes, max_count)
        values = None
        for chunk in chunks:
            values = assembler.add(chunk)
        if values is None:
            raise ProtocolOrderError("the model server sent an incomplete ciphertext vector")
        return values
