"""The latency benchmark's data: MNIST's IDX format read exactly, bad files refused;
the workloads compiled at the weight bits asked."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from benchmarks.link import parse_link
from benchmarks.workloads import (
    BENCH_WEIGHT_BITS,
    build_workload,
    compile_workload,
    load_mnist,
)
from ppinfer.encoding.numerics import quantize
from ppinfer.errors import PPInferError


def _idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def test_mnist_idx_files_are_read_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(7, 28, 28))
    test = rng.integers(0, 256, size=(3, 28, 28))
    _idx(tmp_path / "train-images-idx3-ubyte", train, compress=True)
    _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(7) % 10)
    _idx(tmp_path / "t10k-images-idx3-ubyte", test)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([4, 2, 9]))
    split = load_mnist(tmp_path, train=5, test=3)
    assert split.train_x.shape == (5, 784) and split.test_x.shape == (3, 784)
    np.testing.assert_array_equal(split.train_x[1], train[1].reshape(784) / 255.0)
    assert split.test_y.tolist() == [4, 2, 9] and split.train_y.tolist() == [0, 1, 2, 3, 4]


def test_missing_or_malformed_idx_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PPInferError, match="no train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        _idx(tmp_path / name, np.zeros(3))
    with pytest.raises(PPInferError, match="not an IDX file"):
        load_mnist(tmp_path)


def test_link_queues_at_its_rate_then_adds_half_the_rtt() -> None:
    link = parse_link("1mbit:100ms")
    free, due = link.schedule(now=10.0, free_at=0.0, size=125_000)  # 1 Mbit: one second
    assert (free, due) == pytest.approx((11.0, 11.05))
    free, due = link.schedule(now=10.5, free_at=free, size=12_500)  # queued behind it
    assert (free, due) == pytest.approx((11.1, 11.15))


def test_link_specs() -> None:
    link = parse_link("256kbit:100ms")
    assert link.bits_per_second == 256_000 and link.rtt_seconds == pytest.approx(0.1)
    assert parse_link("1mbit:20ms").describe() == "1 Mbit/s, 20 ms RTT"
    with pytest.raises(PPInferError, match="1mbit:100ms"):
        parse_link("1 gigabit")


def test_slow_link_relays_every_byte_in_order() -> None:
    import socket
    import threading

    from benchmarks.link import SlowLink

    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        connection, _ = server.accept()
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    link = SlowLink(f"127.0.0.1:{server.getsockname()[1]}", parse_link("64mbit:40ms"))
    payload = np.random.default_rng(1).integers(0, 256, size=200_000, dtype=np.uint8).tobytes()
    host, port = link.address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as client:
        client.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += client.recv(65536)
    link.close()
    server.close()
    assert received == payload


@pytest.mark.parametrize("bits", [8, 16])
def test_workloads_compile_at_the_weight_bits_asked(bits: int) -> None:
    workload = build_workload("W2", epochs_scale=0.05)
    kwargs = {} if bits == BENCH_WEIGHT_BITS else {"weight_bits": bits}
    report = compile_workload(workload, 64, **kwargs)
    dense = report.plan.dense
    largest = max(int(np.abs(quantize(d.weight, d.weight_frac_bits)).max()) for d in dense)
    assert 2 ** (bits - 2) <= largest < 2 ** (bits - 1)
    assert report.agreement is not None and report.agreement > 0.9
