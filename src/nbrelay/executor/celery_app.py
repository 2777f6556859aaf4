"""The Celery application both sides share: web nodes send "a job waits" on it, `nbrelay worker` consumes it.

Celery carries wake-ups, and cancels as a broadcast (CANCEL_COMMAND), only. The job itself is claimed from the
store by the worker that takes a message (the oldest queued job, one conditional UPDATE), and the claim's lease in
the store says who runs it; so a message lost, duplicated or delivered twice costs nothing but a claim that finds
the queue empty, and a lost cancel a second (the lease renewal brings it). The settings below follow from that
(docs/deploy.md, "Celery settings"):

- acks early (task_acks_late off): a multi-hour job never holds an unacknowledged message, so neither Redis's
  visibility timeout nor RabbitMQ's consumer timeout can redeliver it or close the channel under it;
- prefetch off on Redis (worker_disable_prefetch) and a multiplier of 1: a busy worker does not sit on wake-ups
  that an idle one could serve;
- no result backend, JSON only, no events, gossip or mingle: nothing else travels.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from celery import Celery

from nbrelay.config import Settings

TASK_NAME = "nbrelay.run"
# A remote control command (a broadcast to every worker, not a task): stop job N now, if it runs here.
CANCEL_COMMAND = "nbrelay_cancel"


def key_prefix(settings: Settings) -> str:
    """The Redis key prefix of this installation (broker_url's ?prefix=, default nbrelay): several installations
    (or tests) share one Redis without seeing each other's keys, queues included."""
    for url in (settings.broker_url, settings.celery_broker_url):
        values = parse_qs(urlsplit(url).query).get("prefix")
        if values:
            return values[0]
    return "nbrelay"


def queue_name(settings: Settings) -> str:
    return f"{key_prefix(settings)}.jobs"


def make_celery(settings: Settings) -> Celery:
    broker = settings.celery_broker
    app = Celery("nbrelay", broker=broker, set_as_current=False)
    options: dict[str, object] = {}
    if broker.startswith(("redis://", "rediss://")):
        options["global_keyprefix"] = f"{key_prefix(settings)}:celery:"
    app.conf.update(
        task_default_queue=queue_name(settings),
        task_ignore_result=True,
        task_acks_late=False,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=options,
    )
    return app
