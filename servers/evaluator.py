"""Model server A's inference, free of gRPC: linear layers on ciphertexts, perturbations.

Per inference and per hidden layer, A draws a fresh permutation (P2) and, where the
activation allows it, fresh multiplicative masks d (P3); it packs the perturbed values,
re-randomizes the packed ciphertexts (B must not be able to relate them to ciphertexts
it issued) and sends them to B. B's fresh results come back in permuted order; A puts
them back in place and folds d^-p into the next layer's weights. The output gets an
additive mask s (P1) and a permutation before B seals it for the client.

The same layers serve the client-aided baseline (:meth:`ModelEvaluator.infer_encrypted`):
there the client holds the key, sends Enc(x^) and answers the activation stages itself,
with the same perturbations applied, and receives the packed output.

Per step (0: input, 1..L: layers, L+1: output) A counts its own time (``a_us``), the
round trip to whoever answers the stage (``peer_us``), ciphertext bytes each way and
rounds, in :attr:`ModelEvaluator.counters` as ``step{k}.…``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.counters import Counters
from ppinfer.errors import EncodingRangeError, PPInferError
from ppinfer.functions import StageCall
from ppinfer.numerics import (
    additive_masks,
    exact_matvec,
    fold_weights,
    mask_multipliers,
    quantize_exact,
    random_permutation,
)
from ppinfer.packing import SealCall, SlotLayout
from ppinfer.paillier import (
    PublicKey,
    RandomizerSource,
    add_plain,
    check_ciphertexts,
    pack,
    rerandomize,
)
from ppinfer.paillier.linear import linear
from ppinfer.plan import Plan
from ppinfer.schedule import analyze, check_key_fits

__all__ = ["Activator", "EncryptedOutcome", "InferenceOutcome", "KeyLink", "ModelEvaluator"]


class KeyLink(Protocol):
    """What A asks of B. :class:`ppinfer.servers.key_core.KeyServerCore` is one (in process)."""

    def derive(self, session_id: str, client_public: bytes) -> None: ...

    def masks(self, session_id: str, request_id: int, count: int, mask_bits: int) -> list[mpz]: ...

    def activate(
        self, session_id: str, request_id: int, call: StageCall, packed: Sequence[int]
    ) -> list[mpz]: ...

    def seal(
        self, session_id: str, request_id: int, call: SealCall, packed: Sequence[int]
    ) -> bytes: ...

    def end(self, session_id: str) -> None: ...


@dataclass(frozen=True)
class _Perturbation:
    """One stage's perturbations: window order, the z index sent at each position, the
    multiplicative mask of each position (None: the stage allows none), d^p per window."""

    order: list[int]
    positions: list[int]
    scales: list[int] | None
    folds: list[int] | None


@dataclass(frozen=True)
class _PreparedStage:
    """The first stage's input, prepared: its perturbations, and the packed,
    re-randomized ciphertexts of Enc(-W1·r) under them (the input's part comes online)."""

    perturbation: _Perturbation
    packed: list[mpz]


@dataclass(frozen=True)
class Prepared:
    """The offline half of one request (session precomputation): Enc(-W1·r), the first
    layer applied to B's Enc(-r) for the mask r of ``request_id``, before any input, and
    the first stage's perturbations and packing applied to it."""

    request_id: int
    first_layer: list[mpz]
    stage: _PreparedStage | None = None


@dataclass(frozen=True)
class InferenceOutcome:
    """What the client gets: B's sealed blob, and A's additive mask and permutation."""

    sealed: bytes
    output_mask: list[int]
    permutation: list[int]
    value_bytes: int


@dataclass(frozen=True)
class EncryptedOutcome:
    """Client-aided mode: the logits, packed under the client's own key."""

    packed: list[mpz]
    layout: SlotLayout


#: Test instrumentation: called with (what, values) for everything A receives in the clear.
Observer = Callable[[str, object], None]
Progress = Callable[[int, int], None]
#: Answers one activation stage: packed, perturbed values in, a fresh ciphertext per window out.
Activator = Callable[[StageCall, list[mpz]], list[mpz]]
T = TypeVar("T")


class ModelEvaluator:
    """One plan under one public key: everything A computes for an inference."""

    def __init__(
        self,
        plan: Plan,
        public: PublicKey,
        randomizers: RandomizerSource,
        observer: Observer | None = None,
        counters: Counters | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        """``on_step(step, seconds)`` hears each step's wall time (for metrics)."""
        self.plan = plan
        self.public = public
        self.numerics = analyze(plan)
        check_key_fits(self.numerics, public.bits, plan.name)
        self._randomizers = randomizers
        self._observer = observer
        first = plan.dense[0]
        self._first_weights = fold_weights(first.weight, first.weight_frac_bits, None)
        self._biases = [
            quantize_exact(layer.bias, info.out_scale)
            for layer, info in zip(plan.dense, self.numerics.layers, strict=True)
        ]
        self._layouts = [
            SlotLayout.for_key(info.masked_bits, public.bits)
            for info in self.numerics.layers
            if info.masked_bits is not None
        ]
        self._windows = [
            activation.window_rows(layer.outputs).tolist()
            for activation, layer in zip(plan.activations, plan.dense, strict=False)
        ]
        self._seal_layout = SlotLayout.for_key(self.numerics.sealed_value_bits, public.bits)
        self.output_layout = SlotLayout.for_key(self.numerics.layers[-1].z_bits, public.bits)
        self.mask_bits = plan.input_format.value_bits + plan.masks.sigma
        self.counters = counters if counters is not None else Counters()
        self._on_step = on_step

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
    ) -> InferenceOutcome:
        """One private inference; every perturbation is fresh from the OS CSPRNG. With
        ``prepared`` for this request id, the first layer is plaintext arithmetic."""
        u = self.check_input(masked_input)
        if self._observer is not None:
            self._observer("masked_input", u)
        values: list[mpz] = []
        offsets: list[int] | None = None
        if prepared is not None and prepared.request_id == request_id:
            # Enc(W1 x^ + b1) = Enc(-W1 r) * g^(W1 u + b1), as u = x^ + r
            with self._step(0):
                products = exact_matvec(self._first_weights, u)
                offsets = [a + int(b) for a, b in zip(products, self._biases[0], strict=True)]
            self.counters.add(precomputed_used=1)
        else:
            prepared = None
            with self._step(0, rounds=1, bytes_in=len(u) * self.public.ciphertext_bytes) as clock:
                with clock.peer():
                    negative_mask = link.masks(session_id, request_id, len(u), self.mask_bits)
                values = add_plain(self.public, negative_mask, u)  # Enc(-r) * g^u = Enc(x^)

        def activate(call: StageCall, packed: list[mpz]) -> list[mpz]:
            return link.activate(session_id, request_id, call, packed)

        z = self._layers(values, activate, progress, prepared, offsets)
        return self._seal_output(link, session_id, request_id, z, progress)

    def prepare(self, link: KeyLink, session_id: str, request_id: int) -> Prepared:
        """Session precomputation for ``request_id``: B's Enc(-r) and Enc(-W1·r), while the
        session is idle. Counted apart (``precompute_us``, ``precomputed``)."""
        count = int(np.prod(self.plan.input_shape))
        started = time.perf_counter_ns()
        negative_mask = link.masks(session_id, request_id, count, self.mask_bits)
        outputs = self._first_weights.shape[0]
        first = linear(self.public, negative_mask, self._first_weights, [0] * outputs)
        self.counters.add(precomputed=1, precompute_us=(time.perf_counter_ns() - started) // 1000)
        return Prepared(request_id, first)

    def infer_encrypted(
        self,
        ciphertexts: Sequence[int],
        activate: Activator,
        progress: Progress | None = None,
    ) -> EncryptedOutcome:
        """Client-aided baseline: the same layers on Enc(x^) under the client's key, the
        stages answered by ``activate`` (the client), the logits packed for the client."""
        expected = int(np.prod(self.plan.input_shape))
        if len(ciphertexts) != expected:
            raise PPInferError(
                f"{len(ciphertexts)} input ciphertexts for model {self.plan.name!r}, which "
                f"takes {expected} values {self.plan.input_shape}"
            )
        values = [mpz(c) for c in ciphertexts]
        check_ciphertexts(self.public, values)
        z = self._layers(values, activate, progress)
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

    def _layers(
        self,
        values: list[mpz],
        activate: Activator,
        progress: Progress | None,
        prepared: Prepared | None = None,
        offsets: list[int] | None = None,
    ) -> list[mpz]:
        """Every Dense layer and the stages between them; returns Enc(z) of the last layer.
        With ``prepared`` (session precomputation), the first layer's z is Enc(-W1·r)
        times g^offsets, and its stage input was packed ahead."""
        plan = self.plan
        divisors: list[int] | None = None
        for index, layer in enumerate(plan.dense):
            info = self.numerics.layers[index]
            with self._step(index + 1) as clock:
                weights = (
                    self._first_weights
                    if index == 0
                    else fold_weights(
                        layer.weight, layer.weight_frac_bits + info.fold_bits, divisors
                    )
                )
                last = index == len(plan.dense) - 1
                if index == 0 and prepared is not None and offsets is not None:
                    if last or prepared.stage is None:
                        z = add_plain(self.public, prepared.first_layer, offsets)
                    else:
                        z = []  # the stage input is built from the prepared packing
                else:
                    z = linear(self.public, values, weights, self._biases[index])
                    self.counters.add(weights=int(np.count_nonzero(weights)))
                if not last:
                    stage = prepared.stage if index == 0 and prepared is not None else None
                    values, divisors = self._activate(
                        activate, index, z, clock, stage, offsets if index == 0 else None
                    )
            if progress is not None:
                progress(index + 1, self.steps)
        return z

    @contextmanager
    def _step(self, step: int, **counts: int) -> Iterator[_StepClock]:
        """Count ``step``: A's own time (wall time minus the peer's round trips) and more."""
        clock = _StepClock(f"step{step}", counts)
        started = time.perf_counter_ns()
        try:
            yield clock
        finally:
            elapsed = (time.perf_counter_ns() - started) // 1000
            clock.counts[f"{clock.name}.a_us"] = max(0, elapsed - clock.peer_us)
            clock.counts[f"{clock.name}.peer_us"] = clock.peer_us
            self.counters.add_named(clock.counts)
            if self._on_step is not None:
                self._on_step(step, elapsed / 1e6)

    def _perturbation(self, index: int) -> _Perturbation:
        """Fresh perturbations for stage ``index``: a permutation of the windows and of
        the values inside each, and one multiplicative mask d per window where the stage
        allows it (P2, P3). Drawn before any value is known, so they can be prepared."""
        plan = self.plan
        activation = plan.activations[index]
        windows = self._windows[index]
        order = random_permutation(len(windows))
        group = len(windows[0])
        positions = [i for w in order for i in _shuffled(windows[w])]
        if activation.power is None:
            return _Perturbation(order, positions, None, None)
        multipliers = mask_multipliers(len(order), plan.masks.min_bits, plan.masks.spread_bits)
        scales = [multipliers[position // group] for position in range(len(positions))]
        return _Perturbation(order, positions, scales, [d**activation.power for d in multipliers])

    def _packed_stage_input(self, index: int, z: list[mpz], p: _Perturbation) -> list[mpz]:
        """The ciphertexts sent to B: permuted, scaled by d, packed, re-randomized."""
        public = self.public
        sent = [z[i] for i in p.positions]
        if p.scales is not None:
            nsquare = public.nsquare
            sent = [pow(c, d, nsquare) for c, d in zip(sent, p.scales, strict=True)]
        return rerandomize(public, pack(public, sent, self._layouts[index]), self._randomizers)

    def _activate(
        self,
        activate: Activator,
        index: int,
        z: list[mpz],
        clock: _StepClock,
        prepared: _PreparedStage | None = None,
        offsets: list[int] | None = None,
    ) -> tuple[list[mpz], list[int] | None]:
        """One round trip to B: the perturbed, packed values out; B's results come back
        in window order, and d^p per window is what the next layer divides by. With a
        prepared stage, z = Enc(offsets) * (its prepared part): one multiplication per
        packed ciphertext, the offsets packed in plaintext."""
        if prepared is not None and offsets is not None:
            p = prepared.perturbation
            plain = [offsets[i] for i in p.positions]
            if p.scales is not None:
                plain = [v * d for v, d in zip(plain, p.scales, strict=True)]
            layout = self._layouts[index]
            shift = layout.slot_bits
            n, nsquare = self.public.n, self.public.nsquare
            packed = []
            for batch, ciphertext in zip(layout.batches(len(plain)), prepared.packed, strict=True):
                value = sum(plain[i] << (shift * k) for k, i in enumerate(batch))
                packed.append(ciphertext * (1 + value % n * n) % nsquare)
        else:
            p = self._perturbation(index)
            packed = self._packed_stage_input(index, z, p)
        return self._exchange(activate, index, p, packed, clock)

    def _exchange(
        self,
        activate: Activator,
        index: int,
        p: _Perturbation,
        packed: list[mpz],
        clock: _StepClock,
    ) -> tuple[list[mpz], list[int] | None]:
        activation, public = self.plan.activations[index], self.public
        layout = self._layouts[index]
        info = self.numerics.layers[index]
        call = StageCall(
            activation.stage, layout, len(p.positions), info.out_scale, activation.out_frac_bits
        )
        with clock.peer():
            results = activate(call, packed)
        order = p.order
        if len(results) != len(order):
            raise PPInferError(f"the stage returned {len(results)} results for {len(order)}")
        width = public.ciphertext_bytes
        clock.count("rounds", 1)
        clock.count("bytes_out", len(packed) * width)
        clock.count("bytes_in", len(results) * width)
        self.counters.add(values_to_key_server=len(p.positions))
        folds = p.folds
        return _unpermute(results, order), None if folds is None else _unpermute(folds, order)

    def _seal_output(
        self,
        link: KeyLink,
        session_id: str,
        request_id: int,
        z: list[mpz],
        progress: Progress | None,
    ) -> InferenceOutcome:
        with self._step(len(self.plan.dense) + 1, rounds=1) as clock:
            order = random_permutation(len(z))
            z_bits = self.numerics.layers[-1].z_bits
            masks = additive_masks(len(z), z_bits + self.plan.masks.sigma)
            masked = add_plain(self.public, [z[i] for i in order], masks)
            packed = rerandomize(
                self.public, pack(self.public, masked, self._seal_layout), self._randomizers
            )
            value_bytes = self.numerics.sealed_value_bytes
            clock.count("bytes_out", len(packed) * self.public.ciphertext_bytes)
            with clock.peer():
                call = SealCall(self._seal_layout, len(z), value_bytes)
                sealed = link.seal(session_id, request_id, call, packed)
            clock.count("bytes_in", len(sealed))
        if self._observer is not None:
            self._observer("sealed", sealed)
        self.counters.add(inferences=1)
        if progress is not None:
            progress(self.steps, self.steps)
        return InferenceOutcome(sealed, masks, order, value_bytes)


class _StepClock:
    """One step's counts, and the time spent waiting on the peer inside it."""

    def __init__(self, name: str, counts: dict[str, int]) -> None:
        self.name = name
        self.counts = {f"{name}.{key}": value for key, value in counts.items()}
        self.peer_us = 0

    def count(self, key: str, value: int) -> None:
        name = f"{self.name}.{key}"
        self.counts[name] = self.counts.get(name, 0) + value

    @contextmanager
    def peer(self) -> Iterator[None]:
        started = time.perf_counter_ns()
        try:
            yield
        finally:
            self.peer_us += (time.perf_counter_ns() - started) // 1000


def _shuffled(window: list[int]) -> list[int]:
    """The window's values in a fresh random order (B must not learn positions in it)."""
    if len(window) == 1:
        return window
    return [window[i] for i in random_permutation(len(window))]


def _unpermute(permuted: Sequence[T], order: Sequence[int]) -> list[T]:
    """Put back in place what was sent as ``[items[i] for i in order]``."""
    items: list[T | None] = [None] * len(order)
    for position, source in enumerate(order):
        items[source] = permuted[position]
    return cast(list[T], items)
