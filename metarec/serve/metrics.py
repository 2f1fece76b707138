"""What ``GET /metrics`` reports: counters and histograms kept as plain numbers while serving,
rendered in the Prometheus text format (0.0.4) only when scraped.

Each request costs a dict update and, for the prediction routes, one histogram bucket increment;
``prometheus-client`` (the ``serve`` extra) writes the exposition from them at scrape time,
through a private registry (no global state: several apps in one process each report their own).

Metrics: ``metarec_requests_total{route, code}``, ``metarec_request_seconds{route}``
(histogram), ``metarec_batch_size``, ``metarec_batch_seconds`` (histograms),
``metarec_adapt_failures_total``, ``metarec_diverged_users_total``,
``metarec_bad_requests_total``, ``metarec_ready``, ``metarec_pending``.

>>> s = ServeStats(("/recommend",))
>>> s.answered("/recommend", 200); s.latency["/recommend"].observe(0.004)
>>> b"metarec_requests_total" in s.render(failed=0, bad_requests=0, diverged=0, ready=True, pending=0)[0]
True
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

from metarec._errors import require_extra

__all__ = ["Histogram", "ServeStats"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histograms."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds of the batch-size histogram."""


class Histogram:
    """Bucket counts, their sum and count (rendered as a Prometheus histogram)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets, self.counts, self.sum, self.n = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, v: float) -> None:
        i = bisect.bisect_left(self.buckets, v)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += v
        self.n += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, cumulative count), ..., ("+Inf", count)]``."""
        out, run = [], 0
        for b, c in zip(self.buckets, self.counts, strict=True):
            run += c
            out.append((repr(float(b)), float(run)))
        return [*out, ("+Inf", float(self.n))]


class ServeStats:
    """The numbers behind ``/metrics`` of one app: answers by (route, status), latencies of the
    prediction ``routes``, batch sizes and times."""

    def __init__(self, routes: Iterable[str]) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = {r: Histogram(LATENCY_BUCKETS) for r in routes}
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)

    def answered(self, route: str, status: int) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def batch(self, size: int, seconds: float) -> None:
        self.batch_sizes.observe(size)
        self.batch_seconds.observe(seconds)

    def render(
        self, *, failed: int, bad_requests: int, diverged: int, ready: bool, pending: int
    ) -> tuple[bytes, bytes]:
        """The exposition and its content type (``failed``, ... are the app's own counters)."""
        pc = require_extra("prometheus_client", "serve", "GET /metrics")
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        stats = self

        class _Collector:
            def collect(self) -> Iterator[Any]:
                req = CounterMetricFamily(
                    "metarec_requests",
                    "HTTP requests answered, by route and status",
                    labels=["route", "code"],
                )
                for (route, code), n in sorted(stats.requests.items()):
                    req.add_metric([route, str(code)], n)
                yield req
                lat = HistogramMetricFamily(
                    "metarec_request_seconds",
                    "Time from a prediction request's arrival to its answer",
                    labels=["route"],
                )
                for route, h in stats.latency.items():
                    lat.add_metric([route], h.cumulative(), h.sum)
                yield lat
                for name, doc, h in (
                    (
                        "metarec_batch_size",
                        "Requests adapted together per batch",
                        stats.batch_sizes,
                    ),
                    (
                        "metarec_batch_seconds",
                        "Time to adapt and score one batch",
                        stats.batch_seconds,
                    ),
                ):
                    fam = HistogramMetricFamily(name, doc)
                    fam.add_metric([], h.cumulative(), h.sum)
                    yield fam
                yield CounterMetricFamily(
                    "metarec_adapt_failures",
                    "Prediction requests answered 5xx (a diverged adaptation, non-finite scores, an "
                    "internal error)",
                    value=failed,
                )
                yield CounterMetricFamily(
                    "metarec_diverged_users",
                    "Users whose adaptation diverged (answered an error, or the initialisation "
                    "with on_diverge=fallback)",
                    value=diverged,
                )
                yield CounterMetricFamily(
                    "metarec_bad_requests", "Prediction requests answered 4xx", value=bad_requests
                )
                yield GaugeMetricFamily(
                    "metarec_ready", "1 when GET /ready answers 200", value=float(ready)
                )
                yield GaugeMetricFamily(
                    "metarec_pending", "Requests queued for a batch", value=float(pending)
                )

        registry = pc.CollectorRegistry(auto_describe=False)
        registry.register(_Collector())  # type: ignore[arg-type]
        return pc.generate_latest(registry), pc.CONTENT_TYPE_LATEST.encode()
