"""Prometheus metrics: request counts and latencies by route template, and the state of the service read from
the database at scrape time (jobs by status, queue depth, training throughput, checkpoint sizes).

Each app has its own registry (several apps may live in one test process). With several API processes each
one reports its own request counters; the database-derived gauges are the same from every process.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.db.fork_safe_sqlite import connect_args
from service.db.models import Checkpoint, Dataset, Job
from service.services import job_history

log = logging.getLogger("backprop.metrics")

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
#: Checkpoint size buckets, in bytes: 1 KiB to 1 GiB by powers of 4.
CHECKPOINT_BUCKETS = tuple(float(1024 * 4**i) for i in range(11))
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The app's registry and its request instruments."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings, hub: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "backprop_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "backprop_http_request_duration_seconds",
            "Time to the end of the response, by method and route template (for event streams: the stream's "
            "whole life).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StateCollector(session_factory, settings, hub))


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are not labelled by their raw path: that would let any client grow the label set.
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request and times it, labelled by the matched route's template
    (``/v1/jobs/{job_id}``), never by the raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# Scrape-time state
# --------------------------------------------------------------------------------------------------


def samples_per_second(row: dict[str, Any], n_train: int) -> float | None:
    seconds = row.get("seconds")
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        return None
    return n_train / float(seconds)


def n_train_samples(n_samples: int, config: dict[str, Any]) -> int:
    """Rows an epoch trains on: the dataset less its validation split (the engine keeps floor(n * (1 - vs))) or
    its validation fold (fold i of k holds n // k rows, one more for the first n % k folds)."""
    fold = config.get("validation_fold")
    if isinstance(fold, dict) and isinstance(fold.get("fold"), int) and isinstance(fold.get("folds"), int) \
            and fold["folds"] > 0:
        k = fold["folds"]
        return max(n_samples - (n_samples // k + (fold["fold"] - 1 < n_samples % k)), 0)
    vs = config.get("validation_split") or 0.0
    try:
        vs = float(vs)
    except (TypeError, ValueError):
        vs = 0.0
    return max(int(math.floor(n_samples * (1.0 - vs))), 0)


class StateCollector(Collector):
    def __init__(self, session_factory: sessionmaker[Session], settings: Settings, hub: Any = None) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.hub = hub
        self._broker_probe: Any = None

    def describe(self) -> list[Metric]:
        return []  # dynamic: collected from the database at scrape time

    def collect(self) -> Iterator[Metric]:
        try:
            with self.session_factory() as session:
                yield from self._jobs(session)
                yield from self._throughput(session)
                yield from self._checkpoints(session)
        except Exception as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            up = GaugeMetricFamily("backprop_database_up", "1 when the last scrape could read the database.")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("backprop_database_up", "1 when the last scrape could read the database.")
        up.add_metric([], 1)
        yield up
        depth = self._broker_depth()
        if depth is not None:
            g = GaugeMetricFamily(
                "backprop_broker_queue_length", "Messages waiting in the broker's training queue.", labels=["queue"]
            )
            g.add_metric([self.settings.queue_name], depth)
            yield g
        if self.hub is not None:
            w = GaugeMetricFamily("backprop_event_stream_watchers", "Open job event streams in this process.")
            w.add_metric([], self.hub.watchers)
            yield w
            p = CounterMetricFamily(
                "backprop_event_hub_polls", "Database polls made by this process's event hub (one per cycle, "
                "whatever the number of watchers)."
            )
            p.add_metric([], self.hub.polls)
            yield p

    def _jobs(self, session: Session) -> Iterator[Metric]:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        jobs = GaugeMetricFamily("backprop_jobs", "Jobs by status.", labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], int(counts.get(status, 0)))
        yield jobs
        depth = GaugeMetricFamily("backprop_queue_depth", "Jobs waiting for a worker (queued, in the database).")
        depth.add_metric([], int(counts.get("queued", 0)))
        yield depth

    def _throughput(self, session: Session) -> Iterator[Metric]:
        rows = session.execute(
            select(Job.id, Job.config, Dataset.n_samples)
            .join(Dataset, Dataset.id == Job.dataset_id)
            .where(Job.status == "running")
        ).all()
        g = GaugeMetricFamily(
            "backprop_training_samples_per_second",
            "Training rows per second of each running job, over its latest epoch.",
            labels=["job_id"],
        )
        total = 0.0
        latest = job_history.latest_rows(session, [r.id for r in rows])
        for r in rows:
            row = latest.get(r.id)
            if row is None:
                continue
            rate = samples_per_second(row, n_train_samples(int(r.n_samples), r.config or {}))
            if rate is not None:
                g.add_metric([r.id], rate)
                total += rate
        yield g
        t = GaugeMetricFamily(
            "backprop_training_samples_per_second_total", "Training rows per second, all running jobs together."
        )
        t.add_metric([], total)
        yield t

    def _checkpoints(self, session: Session) -> Iterator[Metric]:
        # One statement: the cumulative bucket counts, the count and the sum, computed by the database.
        columns = [
            func.coalesce(func.sum(case((Checkpoint.size_bytes <= b, 1), else_=0)), 0) for b in CHECKPOINT_BUCKETS
        ]
        row = session.execute(
            select(func.count(Checkpoint.id), func.coalesce(func.sum(Checkpoint.size_bytes), 0), *columns)
        ).one()
        count, total, *cumulative = (int(v or 0) for v in row)
        buckets = [(_le(b), c) for b, c in zip(CHECKPOINT_BUCKETS, cumulative)] + [("+Inf", count)]
        h = HistogramMetricFamily("backprop_checkpoint_size_bytes", "Sizes of the stored training checkpoints.")
        h.add_metric([], buckets, sum_value=total)
        yield h

    def _broker_depth(self) -> int | None:
        """The broker's queue length when it is cheap to read (Redis LLEN, or a count in the embedded
        broker's SQLite file); None otherwise."""
        from service.celery_client import is_redis_broker, is_sqla_broker, sqla_broker_db_url

        url = self.settings.resolved_broker_url
        try:
            if is_redis_broker(url):
                if self._broker_probe is None:
                    import redis

                    self._broker_probe = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
                return int(self._broker_probe.llen(self.settings.queue_name))
            if is_sqla_broker(url):
                from sqlalchemy import create_engine, text

                db_url = sqla_broker_db_url(url)
                if db_url.startswith("sqlite:///") and not Path(db_url[len("sqlite:///"):]).exists():
                    return None  # nothing was ever sent (and connecting would create the file)
                if self._broker_probe is None:
                    self._broker_probe = create_engine(db_url, connect_args=connect_args(db_url))
                with self._broker_probe.connect() as conn:
                    return int(conn.execute(text(
                        "SELECT count(*) FROM kombu_message m JOIN kombu_queue q ON m.queue_id = q.id "
                        "WHERE q.name = :q AND m.visible = :t"
                    ), {"q": self.settings.queue_name, "t": True}).scalar() or 0)
        except Exception as exc:
            log.debug("metrics: broker queue length unavailable: %s", exc)
        return None

    def close(self) -> None:
        probe, self._broker_probe = self._broker_probe, None
        if probe is not None:
            for attr in ("close", "dispose"):
                if hasattr(probe, attr):
                    try:
                        getattr(probe, attr)()
                    except Exception:
                        pass
                    break


def _le(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else repr(bound)
