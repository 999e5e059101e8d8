"""Model server A's side of the client-aided baseline (PROTOCOL.md section 9).

Benchmarking only, and off unless the operator enables it (--allow-client-aided): A cannot
check that the client's modulus is well formed (gcd(n, phi(n)) = 1 is not testable without
the factors), and a malformed one, n = p q with p | q - 1, keeps a subgroup that A's
re-randomizer r^n cannot reach, through which the client reads weights exactly.

The client holds its own Paillier key. A evaluates the same plan under that key with the
same core (:meth:`ModelEvaluator.infer_encrypted`), sends each perturbed activation
stage to the client as the ActivationBatch it would send B, and reads the client's fresh
encryptions back from the session stream. It exists to be measured against the
two-server protocol: same model, same wire format, same run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from gmpy2 import mpz

from ppinfer.compiler.activations import StageCall
from ppinfer.compiler.program import Program
from ppinfer.encoding.wire_bytes import decode_ciphertexts
from ppinfer.errors import PPInferError, ProtocolOrderError
from ppinfer.paillier import PublicKey, check_ciphertexts, fresh_randomizers
from ppinfer.paillier.worker_pool import WorkerPool
from ppinfer.protocol.counters import Counters
from ppinfer.protocol.evaluation_types import EncryptedOutcome, Progress
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.rpc.key_messages import paillier_key_from_msg
from ppinfer.rpc.stage_messages import layout_to_msg, stage_call_to_msg
from ppinfer.rpc.tensor_messages import ChunkAssembler, chunk_ciphertexts
from ppinfer.v1 import model_service_pb2, tensors_pb2

__all__ = ["MIN_CLIENT_KEY_BITS", "AidedEvaluators", "client_public_key", "run_aided_inference"]

#: Bounds on a client-aided key: below 256 bits no plan fits; above 8192 is no real key.
MIN_CLIENT_KEY_BITS = 256
MAX_CLIENT_KEY_BITS = 8192
#: Evaluators kept for recently seen client keys (each holds its key's randomizers).
CACHED_EVALUATORS = 16


def client_public_key(message: tensors_pb2.PaillierPublicKey) -> PublicKey:
    """The client's Paillier key from OpenSession, checked against its stated size and id."""
    bits = range(MIN_CLIENT_KEY_BITS, MAX_CLIENT_KEY_BITS + 1)
    return paillier_key_from_msg(message, "client-aided", bits)


class AidedEvaluators:
    """Evaluators of one plan under client keys, a few kept; their counters shared."""

    def __init__(self, program: Program, worker_pool: WorkerPool | None = None) -> None:
        self.program = program
        self.worker_pool = worker_pool
        self.counters = Counters()
        self._cache: OrderedDict[str, ModelEvaluator] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, public: PublicKey) -> ModelEvaluator:
        with self._lock:
            cached = self._cache.get(public.key_id)
            if cached is not None:
                self._cache.move_to_end(public.key_id)
                return cached
        # A has no secret key here: its re-randomizers cost a full exponentiation each.
        evaluator = ModelEvaluator(
            self.program,
            public,
            lambda count: fresh_randomizers(public, count),
            counters=self.counters,
            worker_pool=self.worker_pool,
        )
        with self._lock:
            self._cache[public.key_id] = evaluator
            while len(self._cache) > CACHED_EVALUATORS:
                self._cache.popitem(last=False)
        return evaluator


class ClientActivator:
    """Sends one stage to the client on the session stream and reads its reply."""

    def __init__(
        self,
        session_id: str,
        request_id: int,
        requests: Iterator[model_service_pb2.ClientMessage],
        send: Callable[[model_service_pb2.ServerMessage], None],
        public: PublicKey,
    ) -> None:
        self._session_id = session_id
        self._request_id = request_id
        self._requests = requests
        self._send = send
        self._public = public
        self._width = public.ciphertext_bytes

    def __call__(self, call: StageCall, packed: list[mpz]) -> list[mpz]:
        for chunk in chunk_ciphertexts(packed, self._width):
            batch = stage_call_to_msg(self._session_id, self._request_id, call, chunk)
            self._send(model_service_pb2.ServerMessage(activation=batch))
        expected = call.count // call.stage.group
        assembler = ChunkAssembler(self._width, expected)
        while True:
            message = next(self._requests, None)
            if message is None:
                raise ProtocolOrderError("the client closed the session during an inference")
            kind = message.WhichOneof("kind")
            if kind != "activated":
                raise ProtocolOrderError(
                    f"expected the client's activation reply, got {kind or 'an empty message'}: "
                    "a client-aided session runs one inference at a time"
                )
            if message.activated.request_id != self._request_id:
                raise ProtocolOrderError(
                    f"activation reply for request {message.activated.request_id}, "
                    f"expected {self._request_id}"
                )
            values = assembler.add(message.activated.chunk)
            if values is not None:
                break
        if len(values) != expected:
            raise PPInferError(f"the client returned {len(values)} results, expected {expected}")
        results = [mpz(v) for v in values]
        check_ciphertexts(self._public, results)  # in Z*_{n^2}, as B's are checked
        return results


def run_aided_inference(
    evaluator: ModelEvaluator,
    session_id: str,
    request: model_service_pb2.InferRequest,
    requests: Iterator[model_service_pb2.ClientMessage],
    send: Callable[[model_service_pb2.ServerMessage], None],
    progress: Progress | None,
) -> model_service_pb2.InferResult:
    """One client-aided inference: Enc(x^) in, stages answered by the client, Enc(logits) out."""
    chunk = request.encrypted_input
    width = evaluator.public.ciphertext_bytes
    if not chunk.last or chunk.seq != 0:
        raise ProtocolOrderError("a client-aided input travels as one chunk with `last` set")
    if chunk.width != width:
        raise PPInferError(f"input ciphertexts are {chunk.width} bytes; this key's are {width}")
    ciphertexts = decode_ciphertexts(chunk.data, width, chunk.count)
    activator = ClientActivator(session_id, request.request_id, requests, send, evaluator.public)
    outcome: EncryptedOutcome = evaluator.infer_encrypted(ciphertexts, activator, progress)
    [output] = list(chunk_ciphertexts(outcome.packed, width, max_bytes=len(outcome.packed) * width))
    return model_service_pb2.InferResult(
        request_id=request.request_id,
        encrypted_output=output,
        output_layout=layout_to_msg(outcome.layout),
    )
