"""Prometheus metrics, one registry per app (so several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass
class JobFigures:
    """The job figures of one node or worker, read when /metrics is scraped (the store's are cluster-wide)."""

    queued: int = 0  # jobs waiting in the store's queue (all nodes)
    running: int = 0  # jobs running (all nodes)
    slots: int = 0  # the concurrency cap: worker processes here (local), or of the live workers (celery)
    lease_expiries: int = 0  # leases this node found expired (its reaper's count)
    requeues: int = 0  # jobs this node re-queued as a new attempt after their worker was lost
    claimed: int = 0  # jobs this worker claimed
    leases_lost: int = 0  # jobs this worker stopped because its lease on them was gone


class JobCollector(Collector):
    """Exposes a JobFigures as it stands at scrape time."""

    def __init__(self, figures: JobFigures):
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        yield GaugeMetricFamily("nbrelay_queue_depth", "jobs waiting in the queue", value=f.queued)
        yield GaugeMetricFamily("nbrelay_jobs_running", "jobs running", value=f.running)
        yield GaugeMetricFamily("nbrelay_slots", "jobs that can run at once", value=f.slots)
        yield CounterMetricFamily("nbrelay_lease_expiries", "expired leases found by this node", value=f.lease_expiries)
        yield CounterMetricFamily("nbrelay_requeues", "jobs re-queued after their worker was lost", value=f.requeues)
        yield CounterMetricFamily("nbrelay_claims", "jobs claimed by this worker", value=f.claimed)
        yield CounterMetricFamily(
            "nbrelay_leases_lost", "runs stopped because their lease was gone", value=f.leases_lost
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.job_figures = JobFigures()
        r.register(JobCollector(self.job_figures))
        self.connections = Gauge("nbrelay_connections", "open push connections", ["transport"], registry=r)
        self.events_published = Counter("nbrelay_events_published_total", "events published", ["type"], registry=r)
        self.events_sent = Counter("nbrelay_events_sent_total", "events sent to clients", ["transport"], registry=r)
        self.disconnects = Counter("nbrelay_disconnects_total", "connections closed", ["transport", "code"], registry=r)
        self.resumes = Counter("nbrelay_resumes_total", "resumes", ["recovered"], registry=r)
        self.queue_drops = Counter(
            "nbrelay_queue_drops_total", "events coalesced or subscribers overflowed", ["kind"], registry=r
        )
        self.hub_lag = Histogram(
            "nbrelay_hub_lag_seconds",
            "from an event's publication (any node) to its delivery to this node's subscribers",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5, float("inf")),
            registry=r,
        )
        self.jobs = Counter("nbrelay_jobs_total", "jobs that reached a state", ["state"], registry=r)
        # Webhooks and e-mail: each attempt by its kind (webhook, email) and what became of the delivery
        # (delivered, pending: to be retried, failed: no attempt left).
        self.notify_attempts = Counter(
            "nbrelay_notify_attempts_total", "delivery attempts made by this node", ["kind", "state"], registry=r
        )
        self.notify_latency = Histogram(
            "nbrelay_notify_latency_seconds",
            "how long one delivery attempt took (request and answer, or the SMTP conversation)",
            ["kind"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
            registry=r,
        )
        self.job_duration = Histogram(
            "nbrelay_job_duration_seconds",
            "run time of finished jobs",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, float("inf")),
            registry=r,
        )
