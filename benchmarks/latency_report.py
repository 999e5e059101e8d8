"""The latency benchmark's markdown report and PNG plots, made from its JSON document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot", "to_markdown"]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def _kb(count: float) -> str:
    return f"{count / 1024:,.1f}"


def _dense_lines(document: dict[str, Any]) -> list[str]:
    """A's first layer in units of one multiplication mod n^2 (both timed in this run)."""
    modmul = document.get("modmul_s")
    if not modmul:
        return []
    rows = []
    for r in document["runs"]:
        info = document["workloads"][r["workload"]]
        unit = modmul.get(str(r["key_bits"]))
        if r["mode"] != "store-empty" or not r.get("first_layer_linear_ms") or not unit:
            continue
        weights = info["first_layer_weights"]
        ratio = r["first_layer_linear_ms"] / 1000 / (weights * unit)
        rows.append(
            [r["workload"], str(r["key_bits"]), f"{weights:,}", f"{unit * 1e6:.2f}",
             f"{r['first_layer_linear_ms']:,.1f}", f"{ratio:.2f}"]
        )  # fmt: skip
    return [
        "## A's first layer in modular multiplications (same run)",
        "",
        "A's time for the first layer's Σ w·Enc(x) (over its worker processes; in the",
        "offline half, where all the homomorphic linear algebra is: measured in the",
        "store-empty mode, where each request makes its own entry) divided by inputs",
        "x outputs x one multiplication mod n^2 of full-size operands, timed in this run.",
        "The wall time over all cores is counted, so 2 cores can halve it. Only dense first",
        "layers (W1, W2) compare: W3's first layer is a convolution, and most of its",
        "inputs x outputs entries are zeros that cost nothing.",
        "",
        *_table(
            [
                "workload",
                "key bits",
                "inputs x outputs",
                "modmul µs",
                "first layer ms",
                "modmul per weight",
            ],
            rows,
        ),
        "",
    ]


def _store_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The store: warm back-to-back latency beside a request that makes its own entry."""
    by_key = {(r["workload"], r["key_bits"], r["mode"]): r for r in runs}
    rows = []
    for r in runs:
        empty = by_key.get((r["workload"], r["key_bits"], "store-empty"))
        if r["mode"] != "two-server" or empty is None:
            continue
        rows.append(
            [r["workload"], str(r["key_bits"]), _ms(r["latency_median_s"]),
             _ms(r["latency_p95_s"]), _ms(empty["latency_median_s"]),
             f"{empty['latency_median_s'] / r['latency_median_s']:,.0f}x",
             f"{r['store_taken']:g} / {r['store_missed']:g}", _kb(r["a_b_online_bytes"]),
             _kb(empty["a_b_bytes"])]
        )  # fmt: skip
    if not rows:
        return []
    return [
        "## The preprocessing store (same run)",
        "",
        "Two-server: back-to-back requests with A's store warm, the defaults' steady state:",
        "every request takes an entry made ahead of any session, and the online half is",
        "integer arithmetic with no Paillier operation at A or B. Store-empty: the same",
        "requests on an A without a store, so each makes its own entry first (B's masks,",
        "every layer's homomorphic linear algebra, B decrypting its shares): what the first",
        "request after a start, or one past a burst the store cannot cover, waits for.",
        "Taken / missed: entries the warm run's session took from the store (its requests",
        "and the tickets it held ahead) and made itself. A<->B online: the steps' own bytes;",
        "per made entry: all A<->B bytes of a store-empty request (its entry and its steps).",
        "",
        *_table(
            [
                "workload",
                "key bits",
                "warm ms (median)",
                "warm p95 ms",
                "store-empty ms",
                "store-empty / warm",
                "taken / missed",
                "A<->B online KiB",
                "A<->B KiB with entry",
            ],
            rows,
        ),
        "",
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def to_markdown(document: dict[str, Any], images: list[str]) -> str:
    machine = document["machine"]
    lines = [
        "# ppinfer latency benchmark: two-server vs client-aided, TenSEAL beside",
        "",
        f"Run {document['started']} to {document['finished']} on {machine['platform']}, "
        f"Python {machine['python']}, {machine['cpus']} CPUs"
        + (" (quick smoke run: few inferences, little training)." if document["quick"] else "."),
        "Made by `ppinfer bench latency`; every figure below comes from this one run"
        + (
            f" (A's store: {document['store_size']} entries per model)."
            if "store_size" in document
            else "."
        ),
        "Per-inference figures are medians over the run's inferences, one at a time:",
        "two-server back to back with A's store warm (the defaults' steady state);",
        "store-empty and client-aided each started once B's randomizer pool is full again",
        "(as after an idle moment), store-empty on an A without a store (every request",
        "makes its own entry, as the first one after a start does).",
        "",
        "## Workloads",
        "",
    ]
    lines += _table(
        ["workload", "model", "data", "weights", "weight bits", "round trips", "inferences",
         "float accuracy", "plan agreement on calibration"],
        [
            [name, w["description"], w["data"], f"{w['weights']:,}",
             str(w.get("weight_bits", 16)), str(w["round_trips"]),
             str(w["inferences"]), f"{w['float_accuracy']:.1%}", f"{w['compile_agreement']:.1%}"]
            for name, w in document["workloads"].items()
        ],
    )  # fmt: skip
    lines += [
        f"- {name}: weight bits {w.get('weight_bits_choice', w.get('weight_bits', 16))}."
        for name, w in document["workloads"].items()
    ]
    lines += ["", "## Client and servers, per inference", ""]
    lines += _table(
        ["workload", "key bits", "mode", "client CPU ms", "own work ms", "client KiB up",
         "client KiB down", "client wire KiB", "latency ms (median)", "p95 ms", "A CPU ms",
         "B CPU ms", "A<->B KiB", "agreement with float", "max logit error"],
        [
            [r["workload"], str(r["key_bits"]), r["mode"], f"{r['client_cpu_s'] * 1000:,.2f}",
             f"{r['client_own_cpu_s'] * 1000:,.3f}", _kb(r["client_bytes_up"]),
             _kb(r["client_bytes_down"]),
             _kb(r["client_wire_bytes_up"] + r["client_wire_bytes_down"]),
             _ms(r["latency_median_s"]), _ms(r["latency_p95_s"]), _ms(r["server_a_cpu_s"]),
             _ms(r["server_b_cpu_s"]), _kb(r["a_b_bytes"]), f"{r['agreement_with_float']:.1%}",
             f"{r['max_logit_error']:.1e}"]
            for r in document["runs"]
        ],
    )  # fmt: skip
    lines += [
        "Client CPU is the client process's user+sys time (getrusage, every thread) over one",
        "inference; own work is the stub's thread time in its own steps. The difference is",
        "gRPC's: the client's asyncio thread handling the messages (about 0.3 ms per",
        "inference here) and gRPC waking while the client waits for A (about 0.4 ms per",
        "second of waiting), so part of it grows with the latency, not with the client's work.",
        "In two-server rows, A's and B's CPU are over the client's run and include the",
        "store's background refill that started during it (entries for later requests):",
        "the offline cost per entry is measured on its own in `ppinfer bench load`.",
        "A<->B KiB: all bytes between A and B over the run per inference, refill included.",
        "",
        "## Ratios client-aided / two-server (same run)",
        "",
        "Client bytes are wire bytes: serialized messages plus gRPC and HTTP/2 frame headers.",
        "",
    ]
    lines += _table(
        ["workload", "key bits", "client CPU", "client own work", "client bytes", "latency"],
        [
            [q["workload"], str(q["key_bits"]), f"{q['client_cpu']:,.0f}x",
             f"{q['client_own_cpu']:,.0f}x",
             f"{q['client_bytes']:,.1f}x", f"{q['latency']:.2f}x"]
            for q in document["ratios"]
        ],
    )  # fmt: skip
    for q in document["ratios"]:
        if q["workload"] == "W1":
            cpu_ok = "meets" if q["client_cpu"] > 2000 else "does NOT meet"
            own_ok = "meets" if q["client_own_cpu"] > 2000 else "does NOT meet"
            bytes_ok = "meets" if q["client_bytes"] > 30 else "does NOT meet"
            lines.append(
                f"- W1 at {q['key_bits']} bits: client process CPU {q['client_cpu']:,.0f}x "
                f"({cpu_ok} the published >2000x); client own work {q['client_own_cpu']:,.0f}x "
                f"({own_ok} it); client bytes {q['client_bytes']:,.1f}x ({bytes_ok} >30x)."
            )
    lines.append("")
    lines += _dense_lines(document)
    lines += _store_lines(document["runs"])
    linked = [r for r in document["runs"] if "link" in r]
    if linked:
        lines += [f"## Over an emulated link: {document['link']}", ""]
        lines += _table(
            ["workload", "key bits", "mode", "inferences", "latency ms (median)", "p95 ms"],
            [
                [r["workload"], str(r["key_bits"]), r["mode"], str(r["link"]["inferences"]),
                 _ms(r["link"]["latency_median_s"]), _ms(r["link"]["latency_p95_s"])]
                for r in linked
            ],
        )  # fmt: skip
        lines += [
            "The link is a user-space relay between the client and A (this kernel has no netem):",
            "each direction queues at the rate, then waits half the RTT.",
            "",
        ]
    naive = document.get("naive")
    if naive:
        lines += [
            "## The naive reference (benchmarks/naive.py)",
            "",
            "The same protocol written with python-paillier objects: float weights, one",
            "exponentiation per weight, a fresh full encryption per value, no packing, one",
            "core, in one process without gRPC (timed in its favour; CPU time of its steps).",
            "",
        ]
        lines += _table(
            ["workload", "key bits", "inferences", "latency ms (median)", "A CPU ms", "B CPU ms",
             "max logit error", "naive / two-server latency"],
            [[naive["workload"], str(naive["key_bits"]), str(naive["inferences"]),
              _ms(naive["latency_median_s"]), _ms(naive["a_cpu_s"]), _ms(naive["b_cpu_s"]),
              f"{naive['max_logit_error']:.1e}", f"{naive['speedup_two_server']:,.1f}x"]],
        )  # fmt: skip
    peer = document.get("peer")
    if peer:
        lines += ["## The peer: TenSEAL (CKKS) on W1's architecture with x^2 activations", ""]
        lines += _table(
            ["latency ms (median)", "client CPU ms", "server CPU ms", "client KiB up",
             "client KiB down", "one-time setup MiB up", "accuracy", "float x^2 accuracy",
             "agreement", "max logit error"],
            [[
                _ms(peer["latency_median_s"]), f"{peer['client_cpu_s'] * 1000:,.2f}",
                _ms(peer["server_cpu_s"]), _kb(peer["bytes_up"]), _kb(peer["bytes_down"]),
                f"{peer['setup_bytes_up'] / 2**20:,.1f}", f"{peer['accuracy']:.1%}",
                f"{peer['plaintext_accuracy']:.1%}", f"{peer['agreement_with_plaintext']:.1%}",
                f"{peer['max_logit_error']:.2e}",
            ]],
        )  # fmt: skip
        parameters = peer["parameters"]
        lines += [
            f"Parameters: N = {parameters['poly_modulus_degree']}, coefficient moduli "
            f"{parameters['coeff_mod_bit_sizes']}, scale 2^{parameters['scale_bits']}"
            f"; {peer['inferences']} inferences, in one process with no network (compute only).",
            "The setup is the public context with Galois keys, sent once per client.",
            "",
        ]
        lines += _peer_comparison(document, peer)
    lines += ["## Per-step breakdown, per inference", ""]
    lines += [
        "Steps 1..L are A's layers, each with its round trip to whoever answers the",
        "activation (two-server: integer arithmetic and B adding its share; client-aided:",
        "the layer on ciphertexts and the client); the last step is the output (sealing",
        "by B, or packing for the client). A ms is A's own time; peer ms is the round trip",
        "as A waits for it. The offline half (an entry) is not a step: it is made ahead.",
        "",
    ]
    lines += _table(
        ["workload", "key bits", "mode", "step", "A ms", "peer ms", "KiB to peer",
         "KiB from peer", "rounds"],
        [
            [r["workload"], str(r["key_bits"]), r["mode"], str(s["step"]), f"{s['a_ms']:,.1f}",
             f"{s['peer_ms']:,.1f}", _kb(s["bytes_to_peer"]), _kb(s["bytes_from_peer"]),
             f"{s['rounds']:g}"]
            for r in document["runs"]
            for s in r["steps"]
        ],
    )  # fmt: skip
    for image in images:
        lines += [f"![{image}]({image})", ""]
    return "\n".join(lines)


def _peer_comparison(document: dict[str, Any], peer: dict[str, Any]) -> list[str]:
    """TenSEAL against each mode on W1, as ratios >1 where TenSEAL costs more."""
    lines = []
    for run in document["runs"]:
        if run["workload"] != "W1":
            continue
        wire = run["client_wire_bytes_up"] + run["client_wire_bytes_down"]
        figures = [
            ("latency", peer["latency_median_s"], run["latency_median_s"]),
            ("client CPU", peer["client_cpu_s"], run["client_cpu_s"]),
            ("client bytes", peer["bytes_up"] + peer["bytes_down"], wire),
        ]
        said = ", ".join(
            f"{name} {theirs / ours:,.1f}x more"
            if theirs >= ours
            else f"{name} {ours / theirs:,.1f}x less (TenSEAL better)"
            for name, theirs, ours in figures
        )
        lines.append(f"- TenSEAL against {run['mode']} (W1, {run['key_bits']} bits): {said}.")
    if lines:
        lines.append("- TenSEAL's latency has no network in it; ours crosses localhost gRPC.")
    return [*lines, ""] if lines else []


def plot(document: dict[str, Any], stem: Path) -> list[Path]:
    """Client CPU and client bytes per mode (log scale), and the per-step latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = document["runs"]
    bits = sorted({r["key_bits"] for r in runs})[0]
    runs = [r for r in runs if r["key_bits"] == bits]
    names = list(dict.fromkeys(r["workload"] for r in runs))
    modes = list(dict.fromkeys(r["mode"] for r in runs))
    peer = document.get("peer")
    written = []
    for key, label, suffix in (
        ("client_cpu_s", "client CPU per inference (ms)", "client-cpu"),
        ("client_wire", "client bytes per inference (KiB)", "client-bytes"),
    ):
        figure, axes = plt.subplots(figsize=(7, 4))
        width = 0.8 / (len(modes) + (1 if peer else 0))
        for index, mode in enumerate(modes):
            values = []
            for name in names:
                [r] = [r for r in runs if r["workload"] == name and r["mode"] == mode]
                value = (
                    r["client_cpu_s"] * 1000
                    if key == "client_cpu_s"
                    else (r["client_wire_bytes_up"] + r["client_wire_bytes_down"]) / 1024
                )
                values.append(value)
            axes.bar([i + index * width for i in range(len(names))], values, width, label=mode)
        if peer and "W1" in names:
            value = (
                peer["client_cpu_s"] * 1000
                if key == "client_cpu_s"
                else (peer["bytes_up"] + peer["bytes_down"]) / 1024
            )
            axes.bar([names.index("W1") + len(modes) * width], [value], width, label="TenSEAL")
        axes.set_yscale("log")
        axes.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(names))], names)
        axes.set_ylabel(label)
        axes.set_title(f"{label}, {bits}-bit keys")
        axes.legend()
        figure.tight_layout()
        path = Path(f"{stem}-{suffix}.png")
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)

    figure, axes = plt.subplots(figsize=(8, 4.5))
    labels, a_times, peer_times, bottoms = [], [], [], []
    for r in runs:
        for s in r["steps"]:
            mode = {"two-server": "2S", "client-aided": "CA", "store-empty": "SE"}[r["mode"]]
            labels.append(f"{r['workload']} {mode} {s['step']}")
            a_times.append(s["a_ms"])
            peer_times.append(s["peer_ms"])
            bottoms.append(s["a_ms"])
    positions = range(len(labels))
    axes.bar(positions, a_times, label="A's own time")
    axes.bar(positions, peer_times, bottom=bottoms, label="round trip to B / the client")
    axes.set_xticks(list(positions), labels, rotation=90, fontsize=7)
    axes.set_ylabel("ms per inference")
    axes.set_title(
        f"Per-step latency, {bits}-bit keys (2S two-server warm, SE store-empty, CA client-aided)"
    )
    axes.legend()
    figure.tight_layout()
    path = Path(f"{stem}-steps.png")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written.append(path)
    return written
