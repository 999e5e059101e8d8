"""Per-operation cost of ppinfer's Paillier core next to python-paillier, in one run.

Every figure is the median over ``repeats`` timed batches of the seconds one operation
takes; ratios compare figures from the same run, so machine noise hits both sides.
Run as ``ppinfer bench primitives --json FILE``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import secrets
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import gmpy2
import phe

from ppinfer.encoding.packing import SlotLayout
from ppinfer.paillier import ops
from ppinfer.paillier.fixedbase import FixedBaseRandomizers
from ppinfer.paillier.interop import to_phe_private_key, to_phe_public_key
from ppinfer.paillier.keys import PrivateKey, PublicKey, generate_keypair
from ppinfer.paillier.randomizers import RandomizerPool, fresh_randomizers

__all__ = ["SCHEMA_VERSION", "TARGETS", "Measurement", "run", "time_per_op", "to_markdown"]

SCHEMA_VERSION = 1
PACKED_VALUES = 32
PACKED_VALUE_BITS = 48

#: (ratio name, slower operation, faster operation, minimum asked of us at 2048 bits)
TARGETS: list[tuple[str, str, str, float]] = [
    ("encrypt: phe encrypt / ppinfer pool hit", "phe encrypt", "encrypt (pool hit)", 100.0),
    (
        f"decrypt per value: phe decrypt / ppinfer packed x{PACKED_VALUES}",
        "phe decrypt",
        f"decrypt packed x{PACKED_VALUES} (per value)",
        10.0,
    ),
    ("scalar mul: phe * float / ppinfer * int8", "phe mul float", "mul int8", 3.0),
    (
        "encrypt: phe encrypt / ppinfer pool miss (CRT)",
        "phe encrypt",
        "encrypt (pool miss, CRT)",
        0.0,
    ),
    ("decrypt: phe decrypt / ppinfer decrypt", "phe decrypt", "decrypt", 0.0),
    ("scalar mul: phe * int / ppinfer * int8", "phe mul int8", "mul int8", 0.0),
    (
        f"decrypt per value: ppinfer decrypt / ppinfer packed x{PACKED_VALUES}",
        "decrypt",
        f"decrypt packed x{PACKED_VALUES} (per value)",
        10.0,
    ),
    (
        "randomizer: CRT r^n / fixed base h^e (B's pool refill)",
        "encrypt (pool miss, CRT)",
        "encrypt (pool miss, fixed base)",
        0.0,
    ),
    (
        "encrypt: pool hit, in modular multiplications mod n^2",
        "encrypt (pool hit)",
        "modmul n^2 (unit)",
        0.0,
    ),
]


@dataclass(frozen=True)
class Measurement:
    bits: int
    implementation: str
    operation: str
    seconds_per_op: float
    ops_per_batch: int
    repeats: int


def time_per_op(
    batch: Callable[[], object],
    ops_per_batch: int,
    repeats: int,
    before: Callable[[], object] | None = None,
) -> float:
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        batch()
        samples.append((time.perf_counter() - start) / ops_per_batch)
    return statistics.median(samples)


def _signed(bits: int, count: int) -> list[int]:
    """Test data: uniform signed integers of ``bits`` bits (not key material)."""
    half = 1 << (bits - 1)
    return [secrets.randbelow(2 * half) - half for _ in range(count)]


def _cases(
    public: PublicKey, private: PrivateKey, fast_ops: int, slow_ops: int
) -> Iterable[tuple[str, str, Callable[[], object], int, Callable[[], object] | None]]:
    """(implementation, operation, batch, ops per batch, set-up before each batch)."""
    nsquare = public.nsquare
    plain = _signed(32, fast_ops)
    ciphertexts = ops.encrypt(public, plain, lambda k: fresh_randomizers(public, k, private))
    other = [gmpy2.mpz(secrets.randbelow(int(nsquare))) for _ in range(fast_ops)]
    int8 = _signed(8, fast_ops)
    int16 = _signed(16, fast_ops)

    yield (
        "ppinfer",
        "modmul n^2 (unit)",
        lambda: [a * b % nsquare for a, b in zip(ciphertexts, other, strict=True)],
        fast_ops,
        None,
    )

    pool = RandomizerPool(public, private, capacity=fast_ops, start=False)
    yield (
        "ppinfer",
        "encrypt (pool hit)",
        lambda: ops.encrypt(public, plain, pool),
        fast_ops,
        pool.fill,
    )
    slow_plain = plain[:slow_ops]
    miss_crt = RandomizerPool(public, private, capacity=0, start=False)
    yield (
        "ppinfer",
        "encrypt (pool miss, CRT)",
        lambda: ops.encrypt(public, slow_plain, miss_crt),
        slow_ops,
        None,
    )
    fixed_base = FixedBaseRandomizers(private)
    miss_fixed = RandomizerPool(public, private, capacity=0, start=False, generator=fixed_base)
    yield (
        "ppinfer",
        "encrypt (pool miss, fixed base)",
        lambda: ops.encrypt(public, plain, miss_fixed),
        fast_ops,
        None,
    )
    yield (
        "ppinfer",
        "encrypt (pool miss, public key)",
        lambda: ops.encrypt(public, slow_plain, lambda k: fresh_randomizers(public, k)),
        slow_ops,
        None,
    )
    yield "ppinfer", "decrypt", lambda: ops.decrypt(private, ciphertexts[:slow_ops]), slow_ops, None
    yield "ppinfer", "add", lambda: ops.add(public, ciphertexts, other), fast_ops, None
    yield "ppinfer", "mul int8", lambda: ops.mul_scalar(public, ciphertexts, int8), fast_ops, None
    yield "ppinfer", "mul int16", lambda: ops.mul_scalar(public, ciphertexts, int16), fast_ops, None

    layout = SlotLayout.for_key(PACKED_VALUE_BITS, public.bits, max_slots=PACKED_VALUES)
    small = _signed(PACKED_VALUE_BITS, PACKED_VALUES)
    slot_ciphertexts = ops.encrypt(public, small, lambda k: fresh_randomizers(public, k, private))
    packed = ops.pack(public, slot_ciphertexts, layout)
    yield (
        "ppinfer",
        f"pack x{PACKED_VALUES} (per value)",
        lambda: ops.pack(public, slot_ciphertexts, layout),
        PACKED_VALUES,
        None,
    )
    yield (
        "ppinfer",
        f"decrypt packed x{PACKED_VALUES} (per value)",
        lambda: ops.decrypt_packed(private, packed, layout, PACKED_VALUES),
        PACKED_VALUES,
        None,
    )

    phe_public, phe_private = to_phe_public_key(public), to_phe_private_key(private)
    phe_numbers = [phe_public.encrypt(m) for m in plain[:slow_ops]]
    floats = [m / 97.0 for m in int8]
    yield "phe", "phe encrypt", lambda: [phe_public.encrypt(m) for m in slow_plain], slow_ops, None
    yield (
        "phe",
        "phe decrypt",
        lambda: [phe_private.decrypt(c) for c in phe_numbers],
        slow_ops,
        None,
    )
    yield (
        "phe",
        "phe mul float",
        lambda: [c * w for c, w in zip(phe_numbers, floats, strict=False)],
        slow_ops,
        None,
    )
    yield (
        "phe",
        "phe mul int8",
        lambda: [c * w for c, w in zip(phe_numbers, int8, strict=False)],
        slow_ops,
        None,
    )
    yield (
        "phe",
        "phe add",
        lambda: [
            a + b for a, b in zip(phe_numbers, phe_numbers[1:] + phe_numbers[:1], strict=True)
        ],
        slow_ops,
        None,
    )


def run(
    bits_list: list[int],
    repeats: int = 5,
    fast_ops: int = 1000,
    slow_ops: int = 30,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every case at every key size; returns the JSON-ready result document."""
    from tqdm import tqdm

    measurements: list[Measurement] = []
    keygen_seconds: dict[int, float] = {}
    bar = tqdm(total=0, desc="primitives", unit="op", disable=not progress)
    for bits in bits_list:
        bar.set_postfix_str(f"{bits} bits: key generation")
        start = time.perf_counter()
        public, private = generate_keypair(bits)
        keygen_seconds[bits] = time.perf_counter() - start
        cases = list(_cases(public, private, fast_ops, slow_ops))
        bar.total += len(cases)
        for implementation, operation, batch, count, before in cases:
            bar.set_postfix_str(f"{bits} bits: {operation}")
            seconds = time_per_op(batch, count, repeats, before)
            measurements.append(
                Measurement(bits, implementation, operation, seconds, count, repeats)
            )
            bar.update()
    bar.close()
    return {
        "benchmark": "primitives",
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "gmp": gmpy2.mp_version(),
            "gmpy2": gmpy2.version(),
            "phe": phe.__version__,
        },
        "config": {
            "repeats": repeats,
            "fast_ops": fast_ops,
            "slow_ops": slow_ops,
            "packed_values": PACKED_VALUES,
            "packed_value_bits": PACKED_VALUE_BITS,
        },
        "keygen_seconds": {str(bits): s for bits, s in keygen_seconds.items()},
        "measurements": [asdict(m) for m in measurements],
        "ratios": _ratios(measurements),
    }


def _ratios(measurements: list[Measurement]) -> list[dict[str, Any]]:
    by_key = {(m.bits, m.operation): m.seconds_per_op for m in measurements}
    ratios = []
    for bits in sorted({m.bits for m in measurements}):
        for name, slower, faster, minimum in TARGETS:
            value = by_key[(bits, slower)] / by_key[(bits, faster)]
            ratios.append(
                {
                    "bits": bits,
                    "name": name,
                    "value": value,
                    "target": minimum or None,
                    "met": None if not minimum or bits != 2048 else value >= minimum,
                }
            )
    return ratios


def _format_seconds(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


def to_markdown(document: dict[str, Any]) -> str:
    """A human report: one table of operations per key size, then the ratios."""
    machine = document["machine"]
    lines = [
        "# Paillier primitives: ppinfer vs python-paillier",
        "",
        f"{document['created']} · {machine['platform']} · {machine['cpus']} CPUs · "
        f"Python {machine['python']} · {machine['gmp']} · gmpy2 {machine['gmpy2']} · "
        f"phe {machine['phe']} · median of {document['config']['repeats']} batches",
        "",
    ]
    bits_list = sorted({m["bits"] for m in document["measurements"]})
    lines += [
        "| operation | " + " | ".join(f"{b} bits" for b in bits_list) + " |",
        "|---|" + "---:|" * len(bits_list),
    ]
    operations = list(dict.fromkeys(m["operation"] for m in document["measurements"]))
    cell = {(m["bits"], m["operation"]): m["seconds_per_op"] for m in document["measurements"]}
    for operation in operations:
        values = [_format_seconds(cell[(b, operation)]) for b in bits_list]
        lines.append(f"| {operation} | " + " | ".join(values) + " |")
    lines += ["", "| ratio (same run) | bits | value | asked |", "|---|---:|---:|---|"]
    for ratio in document["ratios"]:
        asked = "" if ratio["target"] is None else f"≥ {ratio['target']:g}"
        if ratio["met"] is not None:
            asked += " ✓" if ratio["met"] else " ✗"
        lines.append(f"| {ratio['name']} | {ratio['bits']} | {ratio['value']:.1f}x | {asked} |")
    keygen = ", ".join(f"{b} bits {float(s):.2f} s" for b, s in document["keygen_seconds"].items())
    lines += ["", f"Key generation (one sample each): {keygen}.", ""]
    return "\n".join(lines)
