"""Prometheus metrics for one daemon: counts, latencies and fill levels, never values.

Each daemon has its own registry, served over HTTP at ``--metrics-listen`` (text format,
``GET /metrics``). Besides the labelled families below, every integer counter the daemon
already keeps for ``GetStats`` (bytes each way, pool hits, values sent to B, per-step
microseconds...) is exported as ``ppinfer_stat_total{name="..."}``, read at scrape time;
those that are levels rather than counts (sessions open, pool size, keys kept) as the
gauge ``ppinfer_stat_level{name="..."}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ppinfer.errors import PPInferError

__all__ = ["Metrics", "serve_metrics"]

log = logging.getLogger("ppinfer.servers")

#: Seconds: an inference with its entry from the store takes milliseconds; one that
#: makes its own entry (a miss), or a large CNN, takes seconds to tens of seconds.
_INFERENCE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
                      30.0, 60.0, 120.0)  # fmt: skip
_LAYER_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0, 30.0)  # fmt: skip


#: GetStats names (their last part) that are levels, which go up and down: gauges.
LEVEL_STATS = ("open_sessions", "pool_size", "retired_keys", "store_depth", "entries_held")


class _Stats(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self):  # type: ignore[no-untyped-def]
        counts = CounterMetricFamily(
            "ppinfer_stat", "the daemon's GetStats counters, by name", labels=["name"]
        )
        levels = GaugeMetricFamily(
            "ppinfer_stat_level", "the daemon's GetStats levels, by name", labels=["name"]
        )
        try:
            stats = self._read()
        except PPInferError:
            stats = {}  # a peer's stats that cannot be read now are left out of this scrape
        for name, value in sorted(stats.items()):
            family = levels if name.rsplit(".", 1)[-1] in LEVEL_STATS else counts
            family.add_metric([name], value)
        yield counts
        yield levels


class Metrics:
    """The metric families both daemons share; each daemon fills those it has."""

    def __init__(self, peer: bool = True) -> None:
        """``peer``: the daemon watches another server (A watches B) and exports peer_up."""
        self.registry = CollectorRegistry()
        registry = self.registry
        self.inferences = Counter(
            "ppinfer_inferences", "inferences completed", ["model", "mode"], registry=registry
        )
        self.inference_seconds = Histogram(
            "ppinfer_inference_seconds", "wall time of one inference at A",
            ["model"], buckets=_INFERENCE_BUCKETS, registry=registry,
        )  # fmt: skip
        self.layer_seconds = Histogram(
            "ppinfer_layer_seconds", "wall time of one step of an inference (layer, or the seal)",
            ["model", "step"], buckets=_LAYER_BUCKETS, registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "ppinfer_errors", "calls ended with an error status", ["status"], registry=registry
        )
        self.sessions = Gauge("ppinfer_sessions", "sessions open now", registry=registry)
        self.peer_up: Gauge | None = None
        if peer:
            self.peer_up = Gauge(
                "ppinfer_peer_up", "1 while the key server answers its health check",
                registry=registry,
            )  # fmt: skip
        self.pool_fill = Gauge(
            "ppinfer_randomizer_pool_fill", "randomizers ready in the pool", registry=registry
        )
        self.serving = Gauge("ppinfer_serving", "1 while health says SERVING", registry=registry)
        self.store_depth = Gauge(
            "ppinfer_store_depth", "request entries ready in the preprocessing store",
            ["model"], registry=registry,
        )  # fmt: skip
        self.store_filled = Counter(
            "ppinfer_store_entries_made", "request entries the store's filler made",
            ["model"], registry=registry,
        )  # fmt: skip
        self.store_misses = Counter(
            "ppinfer_store_misses", "requests that found the store empty and made their own entry",
            ["model"], registry=registry,
        )  # fmt: skip
        self.entry_seconds = Histogram(
            "ppinfer_store_entry_seconds", "wall time to make one request entry (offline cost)",
            ["model"], buckets=_INFERENCE_BUCKETS, registry=registry,
        )  # fmt: skip

    def export_stats(self, read: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_Stats(read))

    # ppinfer.rpc.server_events.ServerEvents, what A's servicer reports
    def call_failed(self, status: str) -> None:
        self.errors.labels(status).inc()

    def session_opened(self) -> None:
        self.sessions.inc()

    def session_closed(self) -> None:
        self.sessions.dec()

    def inference_done(self, model: str, mode: str, seconds: float | None) -> None:
        self.inferences.labels(model, mode).inc()
        if seconds is not None:
            self.inference_seconds.labels(model).observe(seconds)

    def store_events(self, model: str) -> _StoreEvents:
        """What one model's store reports (ppinfer.protocol.entry_store.StoreEvents)."""
        return _StoreEvents(self, model)

    def step_observer(self, model: str) -> Callable[[int, float], None]:
        """What an evaluator calls with (step, seconds) after each step."""

        def observe(step: int, seconds: float) -> None:
            self.layer_seconds.labels(model, str(step)).observe(seconds)

        return observe


class _StoreEvents:
    def __init__(self, metrics: Metrics, model: str) -> None:
        self._depth = metrics.store_depth.labels(model)
        self._made = metrics.store_filled.labels(model)
        self._missed = metrics.store_misses.labels(model)
        self._seconds = metrics.entry_seconds.labels(model)

    def entry_made(self, seconds: float) -> None:
        self._made.inc()
        self._seconds.observe(seconds)

    def entry_missed(self) -> None:
        self._missed.inc()

    def depth(self, entries: int) -> None:
        self._depth.set(entries)


def serve_metrics(metrics: Metrics, listen: str) -> tuple[int, Callable[[], None]]:
    """Serve ``GET /metrics`` on HOST:PORT in a thread; returns the port and what stops it."""
    host, _, port = listen.rpartition(":")
    try:
        server, thread = start_http_server(int(port), host or "0.0.0.0", metrics.registry)  # noqa: S104
    except (OSError, ValueError) as error:
        raise PPInferError(f"cannot serve metrics on {listen}: {error}") from error
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return server.server_port, stop
