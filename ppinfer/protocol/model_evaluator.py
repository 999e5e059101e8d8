"""Model server A's inference, free of gRPC: linear layers on ciphertexts, perturbations.

Two-server mode splits every request into an offline and an online half.

- Offline (:meth:`ModelEvaluator.make_entry`, ahead of any session, by the model's
  :class:`~ppinfer.protocol.entry_store.EntryStore`): B makes an entry (the client's
  input mask r from a seed, a fresh answer mask t_k per activation stage) and sends
  Enc(-r) and every Enc(-t_k). A draws each stage's permutation (P2) and multiplicative
  masks d (P3), folds d^-p into the next layer's weights, and computes every layer's mask
  part Enc(-W_k m_k) (m_1 = r, m_k = t_(k-1)): the homomorphic linear algebra, all of it.
  Each part is permuted, scaled by d and packed as its stage sends values, then masked by
  a fresh uniform rho that A keeps; B decrypts it into its additive share
  pi(d(-W m)) + rho and keeps it with the entry. The output part gets the same, with the
  additive mask s (P1) and the output permutation folded in.
- Online (:meth:`ModelEvaluator.infer`): integers only. Every layer is arithmetic on what
  A holds in the clear, the masked input u = x^ + r and B's masked answers y + t:
  pi(d(W (y + t) + b) + e) - rho, reduced mod 2^(b+2), goes to B, which adds its share to
  get pi(d z + e) exactly as before, applies the activation and answers d^p f(z) + t in
  the clear. The output stage ends in the seal for the client. No Paillier operation.

The same layers serve the client-aided baseline (:meth:`ModelEvaluator.infer_encrypted`):
there the client holds the key, sends Enc(x^) and answers the activation stages itself
with fresh ciphertexts, so every layer is computed on ciphertexts as they arrive, with
the same perturbations, and the client receives the packed output.

Per step (1..L: layers, L+1: output) A counts its own time (``a_us``), the round trip to
whoever answers the stage (``peer_us``), bytes each way and rounds, in
:attr:`ModelEvaluator.counters` as ``step{k}.…``; the offline half as ``entries`` and
``entry_us``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.compiler.activations import MaskSpec, StageCall
from ppinfer.compiler.bounds import PlanNumerics, check_key_fits
from ppinfer.compiler.plan import Plan
from ppinfer.compiler.program import Program
from ppinfer.encoding.masks import additive_masks, random_permutation
from ppinfer.encoding.numerics import FoldedWeights, reduce_sealed
from ppinfer.encoding.packing import SealCall, SlotLayout
from ppinfer.errors import EncodingRangeError, InferenceFailedError, PPInferError, ServerError
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
        self._share_layouts = layouts.shares
        # The first layer undoes no mask: its integer weights are the same for every entry,
        # so the entries share one read-only copy (784 x 128 int64 is 0.8 MB on W1).
        self._first_weights = program.layers[0].weights(None).full
        self._first_weights.setflags(write=False)
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
        entry: Prepared,
        progress: Progress | None = None,
        bind_next: tuple[str, int] | None = None,
    ) -> InferResult:
        """One private inference on the request entry bound to ``request_id``: plain
        integer arithmetic only. ``bind_next`` (entry id, request id) is bound with the
        sealing, and its ticket comes back with the result."""
        u = self.check_input(masked_input)
        if self._observer is not None:
            self._observer("masked_input", u)
        try:
            return self._online(link, session_id, request_id, u, entry, progress, bind_next)
        except PPInferError as error:
            if error.status == "UNAVAILABLE":
                raise
            if error.status == "NOT_FOUND":  # B lost the entries (it restarted): retry
                raise ServerError(
                    "UNAVAILABLE",
                    f"the key server no longer holds this request's entry ({error}); retry",
                ) from error
            self.counters.add(failed_online=1)
            raise InferenceFailedError(
                "the inference failed after its input was accepted: the input is probably "
                "outside the model's declared range (the model server's log has the detail)"
            ) from error

    def make_entry(self, link: KeyLink) -> Prepared:
        """A request entry, made with B ahead of any session: B's masks, every stage's
        perturbations, and every layer's mask part Enc(-W m), prepared as its stage or the
        sealing uses it and masked by a fresh rho, for B to decrypt into its share. Its
        cost counts as ``entry_us`` (wall) per ``entries``."""
        started = time.perf_counter_ns()
        plan = self.plan
        perturbations = [draw_perturbation(stage, plan.masks) for stage in self.program.stages]
        specs = [
            MaskSpec(len(p.order), cast(int, info.answer_bits) + plan.masks.answer_sigma)
            for p, info in zip(perturbations, self.numerics.layers, strict=False)
        ]
        count = self.program.inputs
        entry_id, ciphertexts = link.new_entry(count, self.mask_bits, specs)
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
            if index < len(perturbations):  # d·(-W m) + rho as its stage sends it
                p = perturbations[index]
                sent = [part[i] for i in p.positions]
                rho = self._share(link, entry_id, index, sent, p.scales)
                stages.append(PreparedStage(p, rho))
        order = random_permutation(len(part))
        seal_rho = self._share(link, entry_id, len(stages), [part[i] for i in order], None)
        weights = [self._first_weights] + [f.full for f in folded[1:]]
        self.counters.add(entries=1, entry_us=(time.perf_counter_ns() - started) // 1000)
        return Prepared(entry_id, weights, stages, order, seal_rho)

    def _share(
        self,
        link: KeyLink,
        entry_id: str,
        part: int,
        sent: list[mpz],
        scales: list[int] | None,
    ) -> list[int]:
        """Enc(d·(-W m) + rho) of one part, scaled, packed and re-randomized, to B, which
        decrypts its share; returns A's rho."""
        layout = self._share_layouts[part]
        packed = pack_scaled(self.public, sent, layout, scales, self.worker_pool)
        rho = additive_masks(len(sent), layout.value_bits - 1)
        masked = rerandomize(
            self.public, add_packed(self.public, packed, rho, layout), self._randomizers
        )
        link.store_share(entry_id, part, layout, len(sent), masked)
        self.counters.add(share_bytes=len(masked) * self.public.ciphertext_bytes)
        return rho

    def _online(
        self,
        link: KeyLink,
        session_id: str,
        request_id: int,
        u: list[int],
        prepared: Prepared,
        progress: Progress | None,
        bind_next: tuple[str, int] | None,
    ) -> InferResult:
        """Every layer in plaintext on what A holds in the clear; each stage gets
        d·(W a + b) + e - rho, to which B adds its share; then the sealing."""
        values: list[int] = u
        stages = len(prepared.stages)
        offsets: list[int] = []
        for index, weights in enumerate(prepared.weights):
            with self._step(index + 1) as clock:
                offsets = self.program.layers[index].affine(weights, values)
                if index < stages:
                    stage = prepared.stages[index]
                    p = stage.perturbation
                    layout = self._layouts[index]
                    sent = _residues(perturbed(offsets, p), stage.rho, layout)
                    answer = partial(link.activate, session_id, request_id, index)
                    answers = self._exchange(answer, index, p, sent, clock)
                    if self._observer is not None:
                        self._observer("multipliers", p.scales)
                        self._observer("stage_answer", answers)
                    values = unpermute(answers, p.order)
            if progress is not None:
                progress(index + 1, self.steps)
        return self._seal_output(
            link, session_id, request_id, prepared, offsets, progress, bind_next
        )

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
                    packed = self._packed_stage_input(index, z, p)
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

    def _packed_stage_input(self, index: int, z: list[mpz], p: Perturbation) -> list[mpz]:
        """Client-aided: the ciphertexts sent to the client, d·z + e permuted, scaled by d,
        packed, re-randomized (the two-server mode sends plain residues instead)."""
        public = self.public
        sent = [z[i] for i in p.positions]
        layout = self._layouts[index]
        packed = pack_scaled(public, sent, layout, p.scales, self.worker_pool)
        if p.noise is not None:
            packed = add_packed(public, packed, p.noise, layout)
        return rerandomize(public, packed, self._randomizers)

    def _exchange(
        self,
        activate: Callable[[StageCall, list[Any]], list[T]],
        index: int,
        p: Perturbation,
        packed: list[mpz] | list[int],
        clock: StepClock,
    ) -> list[T]:
        """One round trip to whoever answers stage ``index`` (B: plain residues; the
        client-aided client: packed ciphertexts); its answers in sent order."""
        public = self.public
        call = self.program.stages[index].call(self._layouts[index])
        with clock.peer():
            results = activate(call, packed)
        if len(results) != len(p.order):
            raise PPInferError(f"the stage returned {len(results)} results for {len(p.order)}")
        width = public.ciphertext_bytes
        clock.count("rounds", 1)
        clock.count("bytes_out", sum(_wire_bytes(v, width) for v in packed))
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
        bind_next: tuple[str, int] | None,
    ) -> InferResult:
        """z[order] + s - rho for B, which adds its share and seals z[order] + s for the
        client (binding the next entry in the same call)."""
        with self._step(len(self.plan.dense) + 1, rounds=1) as clock:
            order = prepared.seal_order
            numerics = self.numerics
            z_bits = numerics.layers[-1].z_bits
            masks = additive_masks(len(z), z_bits + self.plan.masks.answer_sigma)
            plain = [z[i] + s for i, s in zip(order, masks, strict=True)]
            sent = _residues(plain, prepared.seal_rho, self._seal_layout)
            shift, modulus_bits = numerics.sealed_shift, numerics.sealed_modulus_bits
            value_bytes = numerics.sealed_value_bytes
            width = self.public.ciphertext_bytes
            clock.count("bytes_out", sum(_wire_bytes(v, width) for v in sent))
            with clock.peer():
                call = SealCall(self._seal_layout, len(z), value_bytes, shift, modulus_bits)
                sealed, ticket = link.seal(session_id, request_id, call, sent, bind_next)
            clock.count("bytes_in", len(sealed) + len(ticket))
        if self._observer is not None:
            self._observer("sealed", sealed)
            if ticket:
                self._observer("ticket", ticket)
        self.counters.add(inferences=1)
        if progress is not None:
            progress(self.steps, self.steps)
        reduced = [reduce_sealed(s, shift, modulus_bits) for s in masks]
        return InferResult(request_id, sealed, tuple(reduced), value_bytes, tuple(order), ticket)


def _residues(values: list[int], rho: list[int], layout: SlotLayout) -> list[int]:
    """v - rho mod 2^(b+2), signed (b = ``layout.value_bits``, |v| < 2^b): what B adds its
    share d·(-W m) + rho to, getting v back exactly."""
    bits = layout.value_bits + 2
    modulus, half = 1 << bits, 1 << (bits - 1)
    return [(v - r + half) % modulus - half for v, r in zip(values, rho, strict=True)]


def _wire_bytes(result: object, width: int) -> int:
    """Bytes one stage value takes: a ciphertext, or a plaintext integer and its sign."""
    if isinstance(result, int):
        return result.bit_length() // 8 + 1
    return width
