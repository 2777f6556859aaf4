"""Prometheus metrics, one registry per app (so several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("nbrelay_connections", "open push connections", ["transport"], registry=r)
        self.events_published = Counter("nbrelay_events_published_total", "events published", ["type"], registry=r)
        self.events_sent = Counter("nbrelay_events_sent_total", "events sent to clients", ["transport"], registry=r)
        self.disconnects = Counter("nbrelay_disconnects_total", "connections closed", ["transport", "code"], registry=r)
        self.resumes = Counter("nbrelay_resumes_total", "resumes", ["recovered"], registry=r)
        self.queue_drops = Counter(
            "nbrelay_queue_drops_total", "events coalesced or subscribers overflowed", ["kind"], registry=r
        )
        self.jobs = Counter("nbrelay_jobs_total", "jobs that reached a state", ["state"], registry=r)
        self.job_duration = Histogram(
            "nbrelay_job_duration_seconds",
            "run time of finished jobs",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, float("inf")),
            registry=r,
        )
