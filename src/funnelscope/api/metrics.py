"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class _CachedLabels:
    """``labels(*values)`` from a plain dict after the first call.

    prometheus_client validates and converts the values and takes a lock on every ``labels()``
    call (~1 us); the collector calls it three times per request. The child for a tuple of
    values never changes (nothing here removes children), so it is kept. Keyword labels go
    the library's way.
    """

    _children: dict[tuple[Any, ...], Any]

    def labels(self, *values: Any, **by_name: Any) -> Any:
        if by_name:
            return super().labels(*values, **by_name)  # type: ignore[misc]
        try:
            return self._children[values]
        except AttributeError:
            self._children = {}
        except KeyError:
            pass
        child = self._children[values] = super().labels(*values)  # type: ignore[misc]
        return child


class _Counter(_CachedLabels, Counter):
    pass


class _Histogram(_CachedLabels, Histogram):
    pass


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The instruments ``/metrics`` exposes.

    * ``funnelscope_events_accepted_total{family}`` and
      ``funnelscope_events_rejected_total{family, reason}``: events per SDK family;
    * ``funnelscope_requests_total{route, status}`` and
      ``funnelscope_request_duration_seconds{route}``: every HTTP request;
    * ``funnelscope_queue_events``: events waiting for the writer; ``funnelscope_commit_*``: the
      group commits (events per commit, seconds per commit); ``funnelscope_store_memory_bytes``:
      DuckDB's own memory, to tell its cache from the collector's when RSS grows.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = _Counter(
            "funnelscope_events_accepted", "Events accepted (committed).", ["family"], registry=r
        )
        self.rejected = _Counter(
            "funnelscope_events_rejected",
            "Events rejected, by reason code.",
            ["family", "reason"],
            registry=r,
        )
        self.requests = _Counter(
            "funnelscope_requests", "HTTP requests.", ["route", "status"], registry=r
        )
        self.latency = _Histogram(
            "funnelscope_request_duration_seconds",
            "HTTP request latency.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_events = Gauge(
            "funnelscope_queue_events", "Events queued for the writer.", registry=r
        )
        self.store_memory = Gauge(
            "funnelscope_store_memory_bytes",
            "Memory held by DuckDB's buffer manager (cached blocks, "
            "hash tables...): grows with the data up to its limit.",
            registry=r,
        )
        self.overloaded = Counter(
            "funnelscope_overload_rejections",
            "Requests answered 503 because the queue was full.",
            registry=r,
        )
        self.rate_limited = Counter(
            "funnelscope_rate_limited", "Requests answered 429.", registry=r
        )
        self.commit_events = Histogram(
            "funnelscope_commit_events",
            "Events per group commit.",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "funnelscope_commit_seconds",
            "Seconds per group commit.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
