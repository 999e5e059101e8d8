"""``ppinfer bench batching``: what batching concurrent sessions' offline first layer
would save. An experiment on the real primitives, not a protocol feature.

Today each request's offline half (:meth:`ModelEvaluator._prepare`) has B encrypt Enc(-r),
one ciphertext per input, and A compute the first layer's mask part Enc(-W r): most of
the CPU an inference costs. K requests in flight at once (K sessions) could share both:

1. B encrypts, per input j, one plaintext holding every request's mask in its own slot,
   sum_k -r_kj * 2^(k s); A computes the layer once, and slot k of output i holds
   -(W r_k)_i.
2. Each request then needs its own ciphertexts, and only B can split a plaintext. A adds
   a fresh mask nu (sigma bits wider than W r) to every slot, packs several outputs into
   each ciphertext (Horner's rule), and re-randomizes them with textbook randomizers, so
   that B cannot tell how they were combined from the ciphertexts it issued.
3. B decrypts, unpacks and encrypts each value nu - W r alone; A removes nu.

Later layers cannot be batched this way: their mask parts Enc(-W t) take each answer
mask t in its own request's permutation. The run measures both ways on one plan and one
key (CPU of this process tree, A's worker processes included, and wall time), checks
every batched value by decryption against W r computed exactly, and reports the CPU per
request each way.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from gmpy2 import mpz

from benchmarks.procfs import tree_cpu
from ppinfer.compiler.plan import Plan
from ppinfer.compiler.program import Program
from ppinfer.encoding.packing import SlotLayout
from ppinfer.errors import PPInferError
from ppinfer.paillier import PrivateKey, decrypt, encrypt, fresh_randomizers, rerandomize
from ppinfer.paillier.fixedbase import FixedBaseRandomizers
from ppinfer.paillier.linear import submit_linear
from ppinfer.paillier.ops import horner_pack
from ppinfer.paillier.worker_pool import WorkerPool
from ppinfer.protocol.stage_answer import decrypt_values

__all__ = ["run_batching", "to_markdown"]

SCHEMA_VERSION = 1


class _Clock:
    """CPU seconds (this process tree) and wall seconds of named steps."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        pid, wall, cpu = os.getpid(), time.perf_counter(), tree_cpu(os.getpid())
        yield
        self.steps[name] = {
            "cpu_s": tree_cpu(pid) - cpu,
            "wall_s": time.perf_counter() - wall,
        }

    def cpu(self, names: Sequence[str]) -> float:
        return sum(self.steps[name]["cpu_s"] for name in names)


def run_batching(plan: Plan, private: PrivateKey, batch: int) -> dict[str, Any]:
    """Both ways on ``plan``'s first layer under ``private``'s key, ``batch`` requests,
    with A's layers on a worker pool of one process per core, as the daemon runs them."""
    pool = WorkerPool()
    try:
        return _run_batching(plan, private, batch, pool)
    finally:
        pool.close()


def _run_batching(plan: Plan, private: PrivateKey, batch: int, pool: WorkerPool) -> dict[str, Any]:
    if batch < 2:
        raise PPInferError("a batch needs at least 2 requests")
    public = private.public
    program = Program(plan)
    weights = program.layers[0].plain_weights
    mask_bits = program.mask_bits
    row_bits = int(np.abs(weights.full).sum(axis=1).max()).bit_length()
    value_bits = row_bits + mask_bits + plan.masks.sigma + 1  # nu - W r, both signs
    slot = SlotLayout(value_bits, 1).slot_bits
    per_ciphertext = (public.bits - 1) // slot // batch  # outputs packed for B to split
    if per_ciphertext < 1:
        raise PPInferError(
            f"{batch} slots of {slot} bits do not fit a {public.bits}-bit key: batch fewer"
        )
    layout = SlotLayout(value_bits, per_ciphertext * batch)
    outputs, inputs = weights.small.shape
    masks = [[secrets.randbits(mask_bits) for _ in range(inputs)] for _ in range(batch)]
    randomizers = FixedBaseRandomizers(private)  # B's own, as its pool fills

    def textbook(count: int) -> list[mpz]:  # A's: it has no factorization
        return fresh_randomizers(public, count)

    zeros = [0] * outputs
    clock = _Clock()

    # warm-up: every worker process started, every code path run once
    submit_linear(public, encrypt(public, masks[0], randomizers), weights.small, zeros, pool)()
    with clock("unbatched: B encrypts -r"):
        alone = [encrypt(public, [-r for r in m], randomizers) for m in masks]
    with clock("unbatched: A's layer"):
        for ciphertexts in alone:
            submit_linear(public, ciphertexts, weights.small, zeros, pool)()
    with clock("batched: B encrypts packed -r"):
        packed = [sum(-m[j] << (k * slot) for k, m in enumerate(masks)) for j in range(inputs)]
        shared = encrypt(public, packed, randomizers)
    with clock("batched: A's layer, once"):
        layer = submit_linear(public, shared, weights.small, zeros, pool)()
    nus = [[secrets.randbits(value_bits - 1) for _ in range(batch)] for _ in range(outputs)]
    n, nsquare = public.n, public.nsquare
    with clock("batched: A adds nu, packs outputs"):
        masked = [
            c * (1 + sum((v + layout.offset) << (k * slot) for k, v in enumerate(nu)) * n) % nsquare
            for c, nu in zip(layer, nus, strict=True)
        ]
        groups = [masked[i : i + per_ciphertext] for i in range(0, outputs, per_ciphertext)]
        sent = [horner_pack(nsquare, group, None, batch * slot) for group in groups]
    with clock("batched: A re-randomizes (textbook)"):
        sent = rerandomize(public, sent, textbook)
    with clock("batched: B decrypts, unpacks, encrypts each"):
        values: list[int] = []
        for ciphertext, group in zip(sent, groups, strict=True):
            values += decrypt_values(private, [ciphertext], layout, len(group) * batch)
        split = encrypt(public, values, randomizers)
    with clock("batched: A removes nu"):
        flat_nus = [v for nu in nus for v in nu]
        results = [c * (1 - v * n) % nsquare for c, v in zip(split, flat_nus, strict=True)]

    exact = weights.full.astype(object) @ np.array(masks, dtype=object).T  # [outputs, batch]
    opened = decrypt(private, results)
    expected = [-int(exact[i, k]) for i in range(outputs) for k in range(batch)]
    if opened != expected:
        raise PPInferError("batched first layer decrypts to wrong values")

    unbatched = clock.cpu([name for name in clock.steps if name.startswith("unbatched")]) / batch
    batched = clock.cpu([name for name in clock.steps if name.startswith("batched")]) / batch
    return {
        "schema_version": SCHEMA_VERSION,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "plan": plan.name,
        "layer": [outputs, inputs],
        "key_bits": public.bits,
        "batch": batch,
        "slot_bits": slot,
        "ciphertexts_to_split": len(sent),
        "steps": clock.steps,
        "unbatched_cpu_s_per_request": unbatched,
        "batched_cpu_s_per_request": batched,
        "checked_values": len(opened),
    }


def to_markdown(document: dict[str, Any]) -> str:
    """The run as a short report."""
    batch = document["batch"]
    unbatched = document["unbatched_cpu_s_per_request"]
    batched = document["batched_cpu_s_per_request"]
    outputs, inputs = document["layer"]
    lines = [
        f"# Batching the offline first layer of {batch} concurrent requests (experiment)",
        "",
        f"Plan {document['plan']}, first layer {inputs} -> {outputs}, "
        f"{document['key_bits']}-bit key; {document['machine']['cpus']} CPUs; "
        f"run {document['started']}. Slots of {document['slot_bits']} bits; "
        f"{document['ciphertexts_to_split']} ciphertexts for B to split. "
        f"All {document['checked_values']} batched values checked by decryption.",
        "",
        f"| step (unbatched: all {batch} requests one by one) | CPU ms | wall ms |",
        "|---|---|---|",
    ]
    for name, step in document["steps"].items():
        lines.append(f"| {name} | {step['cpu_s'] * 1e3:.1f} | {step['wall_s'] * 1e3:.1f} |")
    saved = 1 - batched / unbatched if unbatched else 0.0
    lines += [
        "",
        f"CPU per request: unbatched **{unbatched * 1e3:.0f} ms**, batched by {batch} "
        f"**{batched * 1e3:.0f} ms** ({saved:.0%} less).",
        "",
    ]
    return "\n".join(lines)
