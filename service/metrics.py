"""Prometheus metrics (`GET /metrics`).

Counters are not kept twice: a collector reads the protocol's `Totals` (the same numbers /healthz
shows) at scrape time. Distributions are prometheus Histograms observed where they happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.frame_latency = Histogram(
            "signstream_frame_to_prediction_seconds",
            "Time from a frame's arrival to its prediction being sent",
            buckets=(0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        # Per ONNX session of the recogniser (encoder, head; palm, hand, pose, sequence): one batched call.
        self.batch_size = Histogram(
            "signstream_session_batch_size",
            "Items per batched ONNX Runtime call, by session",
            ["session"],
            buckets=(1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "signstream_session_batch_seconds",
            "Duration of one batched ONNX Runtime call, by session",
            ["session"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32),
            registry=self.registry,
        )

    def observe_batch(self, session: str, size: int, seconds: float) -> None:
        self.batch_size.labels(session).observe(size)
        self.batch_seconds.labels(session).observe(seconds)

    def add_collector(self, read: Callable[[], Iterator[Metric]]) -> None:
        self.registry.register(_FunctionCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _FunctionCollector(Collector):
    def __init__(self, read: Callable[[], Iterator[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        return self._read()


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def labelled_counter(name: str, documentation: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def info(name: str, documentation: str, values: dict[str, Any]) -> InfoMetricFamily:
    return InfoMetricFamily(name, documentation, value={k: str(v) for k, v in values.items()})
