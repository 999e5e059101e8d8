"""Model server A's inference, free of gRPC: linear layers on ciphertexts, perturbations.

Two-server mode splits every request into an offline and an online half.

- Offline (:meth:`ModelEvaluator.prepare`, before or when the input arrives): B sends
  Enc(-r) for the client's input mask r and Enc(-t_k) for a fresh answer mask t_k of
  every activation stage. A draws each stage's permutation (P2) and multiplicative masks
  d (P3), folds d^-p into the next layer's weights, and computes every layer's mask part
  Enc(-W_k m_k) (m_1 = r, m_k = t_(k-1)): the homomorphic linear algebra, all of it. Each
  part is permuted, scaled by d, packed and re-randomized as its stage will send it.
- Online (:meth:`ModelEvaluator.infer`): every layer is plaintext arithmetic on what A
  holds in the clear, the masked input u = x^ + r and B's masked answers y + t:
  W_k (y + t) + b_k, which A adds to the prepared packed mask part (one multiplication
  per packed ciphertext) to get Enc(d z) packed for B. B answers with d^p f(z) + t in
  the clear; A puts the answers back in window order. The output gets an additive mask s
  (P1) and a permutation before B seals it for the client.

The same layers serve the client-aided baseline (:meth:`ModelEvaluator.infer_encrypted`):
there the client holds the key, sends Enc(x^) and answers the activation stages itself
with fresh ciphertexts, so every layer is computed on ciphertexts as they arrive, with
the same perturbations, and the client receives the packed output.

Per step (0: the offline half when it was not prepared ahead, 1..L: layers, L+1: output)
A counts its own time (``a_us``), the round trip to whoever answers the stage
(``peer_us``), bytes each way and rounds, in :attr:`ModelEvaluator.counters` as
``step{k}.…``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.compiler.activations import MaskSpec, StageCall
from ppinfer.compiler.bounds import PlanNumerics, check_key_fits
from ppinfer.compiler.plan import Plan
from ppinfer.compiler.program import Program
from ppinfer.encoding.masks import additive_masks, random_permutation
from ppinfer.encoding.numerics import FoldedWeights, reduce_sealed
from ppinfer.encoding.packing import SealCall
from ppinfer.errors import EncodingRangeError, InferenceFailedError, PPInferError
from ppinfer.paillier import (
    PublicKey,
    RandomizerSource,
    add_packed,
    check_ciphertexts,
    pack,
    rerandomize,
)
from ppinfer.paillier.linear import Pending, pack_scaled, scale_inputs, submit_linear
from ppinfer.paillier.worker_pool import WorkerPool
from ppinfer.protocol.counters import Counters
from ppinfer.protocol.evaluation_types import (
    Activator,
    EncryptedOutcome,
    Observer,
    Prepared,
    PreparedStage,
    Progress,
)
from ppinfer.protocol.key_link import KeyLink
from ppinfer.protocol.perturbations import Perturbation, draw_perturbation, perturbed, unpermute
from ppinfer.protocol.session_messages import InferResult
from ppinfer.protocol.step_clock import StepClock, timed_step

__all__ = ["ModelEvaluator"]


T = TypeVar("T")


class ModelEvaluator:
    """One plan under one public key: everything A computes for an inference."""

    def __init__(
        self,
        program: Program,
        public: PublicKey,
        randomizers: RandomizerSource,
        observer: Observer | None = None,
        counters: Counters | None = None,
        on_step: Callable[[int, float], None] | None = None,
        worker_pool: WorkerPool | None = None,
    ) -> None:
        """``on_step(step, seconds)`` hears each step's wall time (for metrics); large
        layers are shared by ``worker_pool``'s processes (without one: this process)."""
        self.program = program
        self.public = public
        check_key_fits(program.numerics, public.bits, program.name)
        self._randomizers = randomizers
        self._observer = observer
        layouts = program.layouts(public.bits)
        self._layouts = layouts.stages
        self._seal_layout = layouts.seal
        self.output_layout = layouts.output
        self.counters = counters if counters is not None else Counters()
        self._on_step = on_step
        self.worker_pool = worker_pool

    @property
    def plan(self) -> Plan:
        return self.program.plan

    @property
    def numerics(self) -> PlanNumerics:
        return self.program.numerics

    @property
    def mask_bits(self) -> int:
        return self.program.mask_bits

    @property
    def steps(self) -> int:
        """Progress steps of one inference: each layer, and the sealing."""
        return len(self.plan.dense) + 1

    def check_input(self, masked: npt.NDArray[np.int64]) -> list[int]:
        """Validate u = x^ + r: the plan's shape, and the range an admissible x^ gives."""
        if tuple(masked.shape) != self.plan.input_shape:
            raise PPInferError(
                f"input shape {tuple(masked.shape)} does not match model {self.plan.name!r}, "
                f"which takes {self.plan.input_shape}"
            )
        low = -(2**self.plan.input_format.value_bits)
        high = 2**self.mask_bits - low
        flat = masked.ravel()
        if flat.size and (int(flat.min()) <= low or int(flat.max()) >= high):
            raise EncodingRangeError(
                "masked input is outside the range of any admissible input: the input is "
                "beyond the model's declared range, or it was masked wrongly"
            )
        return [int(v) for v in flat]

    def infer(
        self,
        link: KeyLink,
        session_id: str,
        request_id: int,
        masked_input: npt.NDArray[np.int64],
        progress: Progress | None = None,
        prepared: Prepared | None = None,
    ) -> InferResult:
        """One private inference; every perturbation is fresh from the OS CSPRNG. Without
        ``prepared`` for this request id, its offline half is computed first (step 0)."""
        u = self.check_input(masked_input)
        if self._observer is not None:
            self._observer("masked_input", u)
        if prepared is not None and prepared.request_id == request_id:
            self.counters.add(precomputed_used=1)
        else:
            with self._step(0, rounds=1) as clock:
                prepared = self._prepare(link, session_id, request_id, clock)
        try:
            return self._online(link, session_id, request_id, u, prepared, progress)
        except PPInferError as error:
            if error.status == "UNAVAILABLE":
                raise
            self.counters.add(failed_online=1)
            raise InferenceFailedError(
                "the inference failed after its input was accepted: the input is probably "
                "outside the model's declared range (the model server's log has the detail)"
            ) from error

    def prepare(self, link: KeyLink, session_id: str, request_id: int) -> Prepared:
        """Session precomputation: the offline half of ``request_id`` while the session
        is idle. Counted apart (``precompute_us``, ``precomputed``)."""
        started = time.perf_counter_ns()
        prepared = self._prepare(link, session_id, request_id, StepClock("precompute", {}))
        self.counters.add(precomputed=1, precompute_us=(time.perf_counter_ns() - started) // 1000)
        return prepared

    def _prepare(
        self, link: KeyLink, session_id: str, request_id: int, clock: StepClock
    ) -> Prepared:
        """B's masks for ``request_id``, every stage's perturbations, and every layer's
        mask part Enc(-W m), prepared as its stage or the sealing will send it."""
        plan, public = self.plan, self.public
        perturbations = [draw_perturbation(stage, plan.masks) for stage in self.program.stages]
        specs = [
            MaskSpec(len(p.order), cast(int, info.answer_bits) + plan.masks.answer_sigma)
            for p, info in zip(perturbations, self.numerics.layers, strict=False)
        ]
        count = self.program.inputs
        with clock.peer():
            ciphertexts = link.masks(session_id, request_id, count, self.mask_bits, specs)
        clock.count("bytes_in", len(ciphertexts) * public.ciphertext_bytes)
        masks = [ciphertexts[:count]]  # Enc(-r), then each stage's Enc(-t) in window order
        offset = count
        for p, spec in zip(perturbations, specs, strict=True):
            masks.append(unpermute(ciphertexts[offset : offset + spec.count], p.order))
            offset += spec.count
        layers = self.program.layers
        folded = [layers[0].weights(None)] + [
            layers[index].weights(p.divisors) for index, p in enumerate(perturbations, start=1)
        ]
        # Every layer is queued before any is waited for, so the cores stay busy while
        # this process scales the next layer's inputs (here, on one core: the workers
        # have the earlier layers to do) and packs the finished ones.
        pending = [
            self._submit_linear(
                index, mask, f, [0] * f.small.shape[0], workers=1 if index else None
            )
            for index, (mask, f) in enumerate(zip(masks, folded, strict=True))
        ]
        stages = []
        for index, layer_part in enumerate(pending):
            part = layer_part()
            if index < len(perturbations):  # Enc(-W m) as its stage will send it
                p = perturbations[index]
                stages.append(PreparedStage(p, self._packed_stage_input(index, part, p)))
        order = random_permutation(len(part))
        sealed = pack_scaled(
            public, [part[i] for i in order], self._seal_layout, pool=self.worker_pool
        )
        weights = [f.full for f in folded]
        return Prepared(
            request_id, weights, stages, order, rerandomize(public, sealed, self._randomizers)
        )

    def _online(
        self,
        link: KeyLink,
        session_id: str,
        request_id: int,
        u: list[int],
        prepared: Prepared,
        progress: Progress | None,
    ) -> InferResult:
        """Every layer in plaintext on what A holds in the clear, each stage's packed
        input completed with one multiplication per ciphertext, then the sealing."""
        values: list[int] = u
        stages = len(prepared.stages)
        offsets: list[int] = []
        for index, weights in enumerate(prepared.weights):
            with self._step(index + 1) as clock:
                offsets = self.program.layers[index].affine(weights, values)
                if index < stages:
                    stage = prepared.stages[index]
                    p = stage.perturbation
                    packed = add_packed(
                        self.public, stage.packed, perturbed(offsets, p), self._layouts[index]
                    )
                    answer = partial(link.activate, session_id, request_id, index)
                    answers = self._exchange(answer, index, p, packed, clock)
                    if self._observer is not None:
                        self._observer("multipliers", p.scales)
                        self._observer("stage_answer", answers)
                    values = unpermute(answers, p.order)
            if progress is not None:
                progress(index + 1, self.steps)
        return self._seal_output(link, session_id, request_id, prepared, offsets, progress)

    def infer_encrypted(
        self,
        ciphertexts: Sequence[int],
        activate: Activator,
        progress: Progress | None = None,
    ) -> EncryptedOutcome:
        """Client-aided baseline: the same layers on Enc(x^) under the client's key, the
        stages answered by ``activate`` (the client), the logits packed for the client."""
        expected = self.program.inputs
        if len(ciphertexts) != expected:
            raise PPInferError(
                f"{len(ciphertexts)} input ciphertexts for model {self.plan.name!r}, which "
                f"takes {expected} values {self.plan.input_shape}"
            )
        values = [mpz(c) for c in ciphertexts]
        check_ciphertexts(self.public, values)
        divisors: list[int] | None = None
        z: list[mpz] = []
        stages = len(self.plan.activations)
        for index in range(len(self.plan.dense)):
            with self._step(index + 1) as clock:
                layer = self.program.layers[index]
                z = self._linear(index, values, layer.weights(divisors), layer.bias)
                if index < stages:
                    p = draw_perturbation(self.program.stages[index], self.plan.masks)
                    packed = self._packed_stage_input(index, z, p, noise=True)
                    values = unpermute(self._exchange(activate, index, p, packed, clock), p.order)
                    divisors = p.divisors
            if progress is not None:
                progress(index + 1, self.steps)
        last = len(self.plan.dense) + 1
        with self._step(last) as clock:
            packed = rerandomize(
                self.public, pack(self.public, z, self.output_layout), self._randomizers
            )
            clock.count("bytes_out", len(packed) * self.public.ciphertext_bytes)
        self.counters.add(inferences=1)
        if progress is not None:
            progress(self.steps, self.steps)
        return EncryptedOutcome(packed, self.output_layout)

    def _linear(
        self,
        index: int,
        inputs: list[mpz],
        weights: FoldedWeights,
        bias: Sequence[int],
    ) -> list[mpz]:
        """Enc(W x + b) of layer ``index``, waited for."""
        return self._submit_linear(index, inputs, weights, bias)()

    def _submit_linear(
        self,
        index: int,
        inputs: list[mpz],
        weights: FoldedWeights,
        bias: Sequence[int],
        workers: int | None = None,
    ) -> Pending:
        """Enc(W x + b) of layer ``index`` queued on the worker processes: each input
        raised to its column's factor c_j (on ``workers`` processes), then the narrow
        weights. From here to the result counts as ``layer{k}.linear_us``."""
        started = time.perf_counter_ns()
        pool = self.worker_pool
        scaled = scale_inputs(self.public, inputs, weights.scales, pool, workers)
        pending = submit_linear(self.public, scaled, weights.small, bias, pool)
        self.counters.add(weights=int(np.count_nonzero(weights.small)))

        def result() -> list[mpz]:
            outputs = pending()
            elapsed = (time.perf_counter_ns() - started) // 1000
            self.counters.add_named({f"layer{index + 1}.linear_us": elapsed})
            return outputs

        return result

    def _step(self, step: int, **counts: int) -> AbstractContextManager[StepClock]:
        return timed_step(self.counters, step, self._on_step, **counts)

    def _packed_stage_input(
        self, index: int, z: list[mpz], p: Perturbation, noise: bool = False
    ) -> list[mpz]:
        """The ciphertexts sent to B: permuted, scaled by d, packed, re-randomized. With
        ``noise`` (client-aided: z is the whole value) d·z + e; the two-server mode adds e
        online with the plaintext part instead (:func:`_perturbed`)."""
        public = self.public
        sent = [z[i] for i in p.positions]
        layout = self._layouts[index]
        packed = pack_scaled(public, sent, layout, p.scales, self.worker_pool)
        if noise and p.noise is not None:
            packed = add_packed(public, packed, p.noise, layout)
        return rerandomize(public, packed, self._randomizers)

    def _exchange(
        self,
        activate: Callable[[StageCall, list[mpz]], list[T]],
        index: int,
        p: Perturbation,
        packed: list[mpz],
        clock: StepClock,
    ) -> list[T]:
        """One round trip to whoever answers stage ``index``; its answers in sent order."""
        public = self.public
        call = self.program.stages[index].call(self._layouts[index])
        with clock.peer():
            results = activate(call, packed)
        if len(results) != len(p.order):
            raise PPInferError(f"the stage returned {len(results)} results for {len(p.order)}")
        width = public.ciphertext_bytes
        clock.count("rounds", 1)
        clock.count("bytes_out", len(packed) * width)
        clock.count("bytes_in", sum(_wire_bytes(r, width) for r in results))
        self.counters.add(values_to_key_server=len(p.positions))
        return results

    def _seal_output(
        self,
        link: KeyLink,
        session_id: str,
        request_id: int,
        prepared: Prepared,
        z: list[int],
        progress: Progress | None,
    ) -> InferResult:
        """Enc(z[order] + s) from the prepared packing and the plaintext part of z;
        B decrypts it and seals it for the client."""
        with self._step(len(self.plan.dense) + 1, rounds=1) as clock:
            order = prepared.seal_order
            numerics = self.numerics
            z_bits = numerics.layers[-1].z_bits
            masks = additive_masks(len(z), z_bits + self.plan.masks.answer_sigma)
            plain = [z[i] + s for i, s in zip(order, masks, strict=True)]
            packed = add_packed(self.public, prepared.seal_packed, plain, self._seal_layout)
            shift, modulus_bits = numerics.sealed_shift, numerics.sealed_modulus_bits
            value_bytes = numerics.sealed_value_bytes
            clock.count("bytes_out", len(packed) * self.public.ciphertext_bytes)
            with clock.peer():
                call = SealCall(self._seal_layout, len(z), value_bytes, shift, modulus_bits)
                sealed = link.seal(session_id, request_id, call, packed)
            clock.count("bytes_in", len(sealed))
        if self._observer is not None:
            self._observer("sealed", sealed)
        self.counters.add(inferences=1)
        if progress is not None:
            progress(self.steps, self.steps)
        reduced = [reduce_sealed(s, shift, modulus_bits) for s in masks]
        return InferResult(request_id, sealed, tuple(reduced), value_bytes, tuple(order))


def _wire_bytes(result: object, width: int) -> int:
    """Bytes one stage answer takes: a ciphertext, or a plaintext integer and its sign."""
    if isinstance(result, int):
        return result.bit_length() // 8 + 1
    return width
